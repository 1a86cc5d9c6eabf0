//! Issue #16: compose files from the wild, pushed for real. The keys real projects set reach
//! the container; every unsupported key of a file is named in one push; `pull_policy` is
//! honoured, and a pull that cannot happen leaves the running version alone.

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

/// Seven keys `deploy` does not support yet, at the top, in services and in healthchecks.
const UNSUPPORTED: &str = "include: [other.yml]
services:
  app:
    image: debian:bookworm-slim
    command: sleep infinity
    platform: linux/amd64
    links: [db]
    healthcheck:
      test: [CMD, 'true']
      start_interval: 1s
    post_start:
      - command: echo started
  db:
    image: debian:bookworm-slim
    extends: {service: base}
    volumes_from: [app]
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
        "include",
        "services.app.platform",
        "services.app.links",
        "services.app.healthcheck.start_interval",
        "services.app.post_start",
        "services.db.extends",
        "services.db.volumes_from",
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
