//! Issue #16: compose files from the wild, pushed for real. The keys real projects set reach
//! the container; every unsupported key of a file is named in one push; `pull_policy` is
//! honoured, and a pull that cannot happen leaves the running version alone; services reach
//! each other by links, share volumes and namespaces, and keep sharing them when the service
//! they join is replaced.

mod common;

use common::*;

/// Keys that real files set, each of which must reach the running container.
const V1: &str = "services:
  app:
    image: debian:bookworm-slim
    command: sleep infinity
    pull_policy: never
    stdin_open: true
    tty: true
    cpu_shares: 512
    group_add: [audio]
    develop:
      watch:
        - {action: sync, path: ./src, target: /src}
";

/// Six keys `deploy` does not support yet, at the top and in services.
const UNSUPPORTED: &str = "models:
  llm: {model: ai/smollm2}
services:
  app:
    image: debian:bookworm-slim
    command: sleep infinity
    credential_spec: {config: my-credential-spec}
    cgroup_parent: /custom
    uts: host
  db:
    image: debian:bookworm-slim
    storage_opt: {size: 1G}
    blkio_config: {weight: 300}
";

#[test]
fn real_keys_reach_the_container_and_every_unsupported_key_is_named_in_one_push() {
    let docker = block(docker());
    let stack = Stack::empty("tkeys");
    stack.write("docker-compose.yml", V1);
    stack.commit("v1");
    let push = stack.push("dev");
    assert!(push.output.contains("deployed"), "{}", push.output);
    assert!(
        push.output.contains("`develop` (services app)"),
        "develop: is ignored with one warning: {}",
        push.output
    );
    let v1 = service_container(&stack.project, "app").id.unwrap();
    let inspect = block(docker.inspect_container(&v1, None)).unwrap();
    let (config, host) = (inspect.config.unwrap(), inspect.host_config.unwrap());
    assert_eq!(config.tty, Some(true));
    assert_eq!(config.open_stdin, Some(true));
    assert_eq!(host.cpu_shares, Some(512));
    assert_eq!(host.group_add, Some(vec!["audio".to_owned()]));

    // Every unsupported key is named by the one push that brings them; nothing changes.
    stack.write("docker-compose.yml", UNSUPPORTED);
    stack.commit("unsupported keys");
    let push = stack.push("dev");
    for path in [
        "models",
        "services.app.credential_spec",
        "services.app.cgroup_parent",
        "services.app.uts",
        "services.db.storage_opt",
        "services.db.blkio_config",
    ] {
        assert!(
            push.output.contains(&format!("{path}: not supported")),
            "`{path}` is not named: {}",
            push.output
        );
    }
    assert_eq!(service_container(&stack.project, "app").id.unwrap(), v1);

    // No registry answers here: `pull_policy: always` fails the deploy with one clear line,
    // before anything is replaced.
    stack.write(
        "docker-compose.yml",
        &V1.replace("pull_policy: never", "pull_policy: always")
            .replace("cpu_shares: 512", "cpu_shares: 256"),
    );
    stack.commit("always pull");
    let push = stack.push("dev");
    assert!(!push.output.contains("deployed"), "{}", push.output);
    assert!(
        push.output
            .contains("has `pull_policy: always`, and pulling `debian:bookworm-slim` failed"),
        "{}",
        push.output
    );
    let running = service_container(&stack.project, "app");
    assert_eq!(running.id.unwrap(), v1, "the running container stays");
    assert_eq!(
        running.state.map(|s| s.to_string()).as_deref(),
        Some("running")
    );
}

/// A stack that joins services together: a link's alias, another service's volumes, another
/// service's network namespace; and an inline Dockerfile built with more shared memory.
const JOINED: &str = "services:
  web:
    build:
      context: .
      dockerfile_inline: |
        FROM debian:bookworm-slim
        RUN df -k /dev/shm | tail -n 1 | tr -s ' ' | cut -d ' ' -f 2 > /shm-kib
        CMD [\"sleep\", \"infinity\"]
      shm_size: 256m
    platform: PLATFORM
    environment: {VERSION: v1}
    links: [\"db:database\"]
    volumes_from: [\"files:ro\"]
    depends_on:
      files: {condition: service_healthy}
  db:
    image: debian:bookworm-slim
    command: sleep infinity
  files:
    image: debian:bookworm-slim
    command: sh -c 'echo shared > /srv/static/hello && exec sleep infinity'
    volumes: [/srv/static, \"./uploads:/srv/uploads:ro,private\"]
    healthcheck:
      test: [CMD, test, -f, /srv/static/hello]
      interval: 1s
  sidecar:
    image: debian:bookworm-slim
    command: sleep infinity
    network_mode: service:web
";

fn run_in(project: &str, service: &str, cmd: &[&str]) -> (i64, String) {
    let id = service_container(project, service).id.unwrap();
    let (code, out) = exec(&id, cmd);
    (code, out.trim().to_owned())
}

#[test]
fn links_shared_volumes_and_namespaces_reach_the_right_containers() {
    let docker = block(docker());
    let arch = block(docker.info()).unwrap().architecture.unwrap();
    let platform = match arch.as_str() {
        "x86_64" => "linux/amd64",
        "aarch64" => "linux/arm64",
        other => panic!("no platform name for `{other}`"),
    };
    let stack = Stack::empty("tjoin");
    let v1 = JOINED.replace("PLATFORM", platform);
    stack.write("docker-compose.yml", &v1);
    stack.commit("v1");
    let push = stack.push("dev");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let p = &stack.project;

    // The link's alias names the database, for the service that links to it.
    let (_, database) = run_in(p, "web", &["getent", "hosts", "database"]);
    let (_, db) = run_in(p, "web", &["getent", "hosts", "db"]);
    let ip = |line: &str| {
        line.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    assert!(!ip(&db).is_empty(), "db resolves: {db}");
    assert_eq!(ip(&database), ip(&db), "`database` is db");
    // `files`' volume is web's too, read-only.
    assert_eq!(
        run_in(p, "web", &["cat", "/srv/static/hello"]),
        (0, "shared".to_owned())
    );
    assert_ne!(
        run_in(p, "web", &["touch", "/srv/static/x"]).0,
        0,
        "mounted read-only"
    );
    // The bind's propagation mode reached the engine (`private`, not the default `rprivate`;
    // the slave and shared modes need a host whose `/` is a shared mount).
    let files = service_container(p, "files").id.unwrap();
    let mounts = block(docker.inspect_container(&files, None))
        .unwrap()
        .mounts
        .unwrap();
    let uploads = mounts
        .iter()
        .find(|m| m.destination.as_deref() == Some("/srv/uploads"));
    assert_eq!(
        uploads.and_then(|m| m.propagation.as_deref()),
        Some("private"),
        "{mounts:?}"
    );
    // The inline Dockerfile was built, its RUN step with 256 MiB of /dev/shm.
    assert_eq!(
        run_in(p, "web", &["cat", "/shm-kib"]),
        (0, "262144".to_owned())
    );

    // The sidecar lives in web's network namespace, also after web is replaced.
    let netns = |service: &str| run_in(p, service, &["readlink", "/proc/1/ns/net"]).1;
    assert_eq!(netns("sidecar"), netns("web"));
    let sidecar_v1 = service_container(p, "sidecar").id.unwrap();
    stack.write(
        "docker-compose.yml",
        &v1.replace("VERSION: v1", "VERSION: v2"),
    );
    stack.commit("v2");
    let push = stack.push("dev");
    assert!(push.output.contains("deployed"), "{}", push.output);
    assert_ne!(
        service_container(p, "sidecar").id.unwrap(),
        sidecar_v1,
        "renewed with web"
    );
    assert_eq!(netns("sidecar"), netns("web"), "joined to the new web");

    // A healthcheck's `start_interval` needs a newer engine than this one: the push says so
    // and the running version stays.
    let web_v2 = service_container(p, "web").id.unwrap();
    let version = block(docker.version()).unwrap().api_version.unwrap();
    let older = version.split('.').nth(1).unwrap().parse::<u32>().unwrap() < 44;
    stack.write(
        "docker-compose.yml",
        &v1.replace("VERSION: v1", "VERSION: v3").replace(
            "    links:",
            "    healthcheck: {test: [CMD, 'true'], start_interval: 1s}\n    links:",
        ),
    );
    stack.commit("start interval");
    let push = stack.push("dev");
    if older {
        assert!(
            push.output
                .contains("services.web.healthcheck.start_interval needs Docker Engine 25"),
            "{}",
            push.output
        );
        assert_eq!(service_container(p, "web").id.unwrap(), web_v2);
    } else {
        assert!(push.output.contains("deployed"), "{}", push.output);
    }
}

/// `include:` and `extends:` across files, pushed: what the other files bring runs, with
/// their paths resolved from their own folder; a named file that is a link out of the
/// repository is refused like a compose file would be.
#[test]
fn included_and_extended_files_are_read_from_the_pushed_tree_only() {
    let stack = Stack::empty("tincl");
    stack.write(
        "docker-compose.yml",
        "include: [ops/tools.yml]
services:
  app:
    extends: {file: ops/base.yml, service: base}
    environment: {ROLE: app}
",
    );
    stack.write(
        "ops/base.yml",
        "services:
  base:
    image: debian:bookworm-slim
    command: sleep infinity
    env_file: base.env
",
    );
    stack.write("ops/base.env", "FROM_BASE=yes\n");
    stack.write(
        "ops/tools.yml",
        "services:
  tools:
    image: debian:bookworm-slim
    command: sleep infinity
",
    );
    stack.commit("v1");
    let push = stack.push("dev");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let p = &stack.project;
    let (_, env) = exec(&service_container(p, "app").id.unwrap(), &["env"]);
    assert!(
        env.contains("FROM_BASE=yes") && env.contains("ROLE=app"),
        "{env}"
    );
    assert_eq!(
        service_container(p, "tools")
            .state
            .map(|s| s.to_string())
            .as_deref(),
        Some("running")
    );

    // The included file, now a link to a file of the host: refused, nothing changes.
    let app = service_container(p, "app").id.unwrap();
    let outside = stack.base.path().join("host-tools.yml");
    std::fs::write(&outside, "services: {}\n").unwrap();
    std::fs::remove_file(stack.work.join("ops/tools.yml")).unwrap();
    std::os::unix::fs::symlink(&outside, stack.work.join("ops/tools.yml")).unwrap();
    stack.commit("link out");
    let push = stack.push("dev");
    assert!(!push.output.contains("deployed"), "{}", push.output);
    assert!(push.output.contains("include[0]"), "{}", push.output);
    assert!(push.output.contains("ops/tools.yml"), "{}", push.output);
    assert_eq!(service_container(p, "app").id.unwrap(), app);
}

/// The restart policy each container really gets: a one-shot job another service waits for
/// runs once (`no`), a long-running service comes back after a reboot (`unless-stopped`),
/// and `deploy.restart_policy` is honoured.
#[test]
fn one_shot_jobs_run_once_and_services_come_back() {
    let docker = block(docker());
    let stack = Stack::empty("trestart");
    stack.write(
        "docker-compose.yml",
        "services:
  migrate:
    image: debian:bookworm-slim
    command: 'true'
  app:
    image: debian:bookworm-slim
    command: sleep infinity
    depends_on:
      migrate: {condition: service_completed_successfully}
  cron:
    image: debian:bookworm-slim
    command: sleep infinity
    deploy:
      restart_policy: {condition: on-failure, max_attempts: 2}
",
    );
    stack.commit("v1");
    let push = stack.push("dev");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let inspect = |service: &str| {
        let id = service_container(&stack.project, service).id.unwrap();
        block(docker.inspect_container(&id, None)).unwrap()
    };
    let policy = |service: &str| {
        let policy = inspect(service)
            .host_config
            .unwrap()
            .restart_policy
            .unwrap();
        (
            policy.name.unwrap().to_string(),
            policy.maximum_retry_count.unwrap_or(0),
        )
    };
    assert_eq!(policy("migrate"), ("no".to_owned(), 0));
    let migrate = inspect("migrate");
    let state = migrate.state.unwrap();
    assert_eq!(
        (state.exit_code, migrate.restart_count),
        (Some(0), Some(0)),
        "ran once"
    );
    assert_eq!(policy("app"), ("unless-stopped".to_owned(), 0));
    assert_eq!(policy("cron"), ("on-failure".to_owned(), 2));

    // `deploy config` prints the same policies.
    let config = text(&stack.deploy(&["config"]));
    for line in [
        "restart: 'no'",
        "restart: unless-stopped",
        "restart: on-failure:2",
    ] {
        assert!(config.contains(line), "{line} in:\n{config}");
    }
}

/// A secret or config mounted with its own `uid`, `gid` and `mode` arrives with them, and
/// with its content; the operator's file keeps its own.
#[test]
fn secrets_and_configs_arrive_with_their_owner_and_mode() {
    let stack = Stack::empty("towner");
    let secret = "a-secret-long-enough-to-redact";
    std::fs::write(stack.root.join("code/.secrets/token"), secret).unwrap();
    stack.write(
        "docker-compose.yml",
        "services:
  app:
    image: debian:bookworm-slim
    command: sleep infinity
    secrets:
      - source: token
        uid: '1000'
        gid: '1001'
        mode: 0400
      - source: token
        target: plain
    configs:
      - source: settings
        target: /etc/app.conf
        mode: 0o440
secrets:
  token:
    file: ./.secrets/token
configs:
  settings:
    content: level=debug
",
    );
    stack.commit("v1");
    let push = stack.push("dev");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let app = service_container(&stack.project, "app").id.unwrap();
    let stat = |path: &str| {
        exec(&app, &["stat", "-c", "%u %g %a", path])
            .1
            .trim()
            .to_owned()
    };
    assert_eq!(stat("/run/secrets/token"), "1000 1001 400");
    assert_eq!(exec(&app, &["cat", "/run/secrets/token"]).1, secret);
    assert_eq!(stat("/etc/app.conf"), "0 0 440");
    assert_eq!(exec(&app, &["cat", "/etc/app.conf"]).1, "level=debug");
    // The entry without them mounts the operator's file as it is.
    let host = std::fs::metadata(stack.root.join("code/.secrets/token")).unwrap();
    use std::os::unix::fs::MetadataExt;
    let want = format!("{} {} {:o}", host.uid(), host.gid(), host.mode() & 0o777);
    assert_eq!(stat("/run/secrets/plain"), want);

    // A new mode: a new copy, and the one no container mounts any more is gone.
    let copies = || {
        let mut names: Vec<String> = std::fs::read_dir(stack.root.join("mounts"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = copies();
    assert_eq!(
        before.len(),
        2,
        "the secret's copy and the config's: {before:?}"
    );
    stack.write(
        "docker-compose.yml",
        &stack.compose().replace("mode: 0400", "mode: 0440"),
    );
    stack.commit("v2");
    let push = stack.push("dev");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let app = service_container(&stack.project, "app").id.unwrap();
    assert_eq!(
        exec(&app, &["stat", "-c", "%a", "/run/secrets/token"])
            .1
            .trim(),
        "440"
    );
    let after = copies();
    assert_eq!(after.len(), 2, "{after:?}");
    assert_ne!(
        after, before,
        "the secret's old copy went, its new one came"
    );
}

/// `post_start` runs in the new container before it counts as started, and one that fails
/// fails the deploy with the running version untouched; `pre_stop` runs in the old container
/// before it is stopped for good, whichever deploy stops it.
#[test]
fn lifecycle_hooks_run_in_the_container_at_start_and_before_stop() {
    let stack = Stack::empty("thooks");
    let compose = |version: &str, post_start: &str| {
        format!(
            "services:
  app:
    image: debian:bookworm-slim
    command: sleep infinity
    environment: {{VERSION: {version}}}
    volumes: [./state:/state]
    post_start:
      - command: {post_start}
        environment: {{GREETING: hello}}
    pre_stop:
      - command: sh -c 'echo \"stopped $$VERSION\" >> /state/stops'
"
        )
    };
    // `$$`: the container's shell expands these, not the compose file's interpolation.
    let started = r#"["sh", "-c", "echo \"$$GREETING $$VERSION\" > /tmp/started"]"#;
    stack.write("docker-compose.yml", &compose("v1", started));
    stack.commit("v1");
    let push = stack.push("dev");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let p = &stack.project;
    let v1 = service_container(p, "app").id.unwrap();
    assert_eq!(exec(&v1, &["cat", "/tmp/started"]).1.trim(), "hello v1");

    // v2 replaces the container: v1's pre_stop runs before it stops.
    stack.write("docker-compose.yml", &compose("v2", started));
    stack.commit("v2");
    let push = stack.push("dev");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let stops = stack.root.join("code/state/stops");
    assert_eq!(std::fs::read_to_string(&stops).unwrap(), "stopped v1\n");
    let v2 = service_container(p, "app").id.unwrap();
    assert_eq!(exec(&v2, &["cat", "/tmp/started"]).1.trim(), "hello v2");

    // A post_start that fails: the deploy fails, and v2 keeps running.
    stack.write("docker-compose.yml", &compose("v3", "'false'"));
    stack.commit("v3");
    let push = stack.push("dev");
    assert!(!push.output.contains("deployed"), "{}", push.output);
    assert!(push.output.contains("post_start of"), "{}", push.output);
    let running = service_container(p, "app");
    assert_eq!(running.id.unwrap(), v2);
    assert_eq!(
        running.state.map(|s| s.to_string()).as_deref(),
        Some("running")
    );

    // `deploy down` stops it for good: its pre_stop runs.
    let down = stack.deploy(&["down"]);
    assert!(down.status.success(), "{}", text(&down));
    let stops = std::fs::read_to_string(&stops).unwrap();
    assert!(stops.ends_with("stopped v2\n"), "{stops}");
}
