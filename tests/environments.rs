//! Environments: staging beside production on one host, previews of feature branches seeded
//! from staging and torn down with their branch or their ttl, an old host upgraded in place,
//! and bad settings refused. Real pushes to the real bare repo, the real engine.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::*;

const STAGING_PASSWORD: &str = "staging-Pa55word-for-tests";
const PREVIEW_PASSWORD: &str = "preview-Pa55word-for-tests";

/// An environment other than production: its Docker project, the port its env file gives the
/// app, and the cleanup of what it made.
struct Env {
    project: String,
    port: u16,
    _made: Cleanup,
}

/// A free port for an environment's web service, written as `WEB_PORT` to its env file in ROOT.
fn port_file(stack: &Stack, env_file: &str) -> u16 {
    let port = free_port();
    std::fs::write(stack.root.join(env_file), format!("WEB_PORT={port}\n")).unwrap();
    port
}

/// Declares staging (branch `staging`, its own port in `staging.env`) beside production in
/// deploy.yml, creates it ahead of its first push and gives it its own database password.
fn with_staging(stack: &Stack) -> Env {
    let project = format!("{}-staging", stack.project);
    let made = Cleanup(project.clone());
    let port = port_file(stack, "staging.env");
    stack.add_settings(
        "environments:\n  production: {branch: main}\n  staging:\n    branch: staging\n    env_file: staging.env\n",
    );
    let out = stack.deploy(&["env", "create", "staging"]);
    assert!(out.status.success(), "deploy env create: {}", text(&out));
    let secrets = stack.root.join("envs/staging/code/.secrets");
    assert!(
        secrets.is_dir(),
        "`deploy env create staging` makes {}",
        secrets.display()
    );
    std::fs::write(secrets.join("db_password"), format!("{STAGING_PASSWORD}\n")).unwrap();
    Env {
        project,
        port,
        _made: made,
    }
}

/// Previews of `feature/*` branches on their own port, with their own secrets, seeded from
/// staging.
fn with_previews(stack: &Stack) -> u16 {
    let port = port_file(stack, "preview.env");
    let secrets = stack.root.join("previews/.secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(secrets.join("db_password"), format!("{PREVIEW_PASSWORD}\n")).unwrap();
    stack.add_settings(
        "previews:
  branches: [\"feature/*\"]
  ttl: 1h
  env_file: preview.env
  secrets_from: previews/.secrets
  seed_from: staging
  limits: {cpus: 1, memory: 1GiB}
  max_previews: 10
",
    );
    port
}

/// v1 to production (by alice) and to staging (by sam); both answer. Returns v1's sha.
fn ship_v1_to_both(stack: &Stack, staging: &Env) -> String {
    let (sha1, push) = stack.push_version("v1", "alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let push = stack.push_ref("HEAD:refs/heads/staging", "sam");
    assert!(push.output.contains("deployed"), "{}", push.output);
    assert_names(&push, "staging");
    page(stack.port, "v1");
    page(staging.port, "v1");
    sha1
}

/// The fixture app's page on `port` once it shows `version`.
fn page(port: u16, version: &str) -> String {
    wait_for_page_at(
        port,
        &format!("version: {version}<"),
        Duration::from_secs(60),
    )
}

/// A `remote:` line of the push (the hook's output) names `what`.
fn assert_names(push: &Push, what: &str) {
    assert!(
        push.output
            .lines()
            .any(|l| l.starts_with("remote:") && l.contains(what)),
        "the hook's output names `{what}`: {}",
        push.output
    );
}

fn json(stack: &Stack, args: &[&str]) -> serde_json::Value {
    let out = stack.deploy(args);
    assert!(out.status.success(), "deploy {args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("deploy {args:?} printed no JSON ({e}): {}", text(&out)))
}

fn history(stack: &Stack, env: &str) -> Vec<serde_json::Value> {
    serde_json::from_value(json(stack, &["history", "--json", "--env", env])).unwrap()
}

/// `deploy env list --json`'s entry for `name`.
fn listed(stack: &Stack, name: &str) -> serde_json::Value {
    let list = json(stack, &["env", "list", "--json"]);
    let entries = list
        .as_array()
        .expect("`deploy env list --json` is an array");
    for entry in entries {
        for key in [
            "name",
            "branch",
            "revision",
            "deployed_by",
            "hostnames",
            "preview",
            "expires",
        ] {
            assert!(entry.get(key).is_some(), "no `{key}` in an entry: {list:#}");
        }
    }
    entries
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no environment `{name}` listed: {list:#}"))
        .clone()
}

fn id(project: &str, service: &str) -> String {
    service_container(project, service).id.unwrap()
}

fn build_logs(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

/// The IPv4 addresses a container has on its networks.
fn ips(id: &str) -> Vec<String> {
    let id = id.to_owned();
    block(async move {
        let docker = docker().await;
        let inspect = docker.inspect_container(&id, None).await.unwrap();
        (inspect.network_settings.and_then(|n| n.networks))
            .unwrap_or_default()
            .into_values()
            .filter_map(|e| e.ip_address)
            .filter(|ip| !ip.is_empty())
            .collect()
    })
}

/// Whether a TCP connection from inside container `from` to `ip`:5432 succeeds (3 s bound).
fn reaches_postgres(from: &str, ip: &str) -> (bool, String) {
    let (code, output) = exec(
        from,
        &[
            "python3",
            "-c",
            "import socket,sys; socket.create_connection((sys.argv[1],5432),timeout=3)",
            ip,
        ],
    );
    (code == 0, output)
}

fn printenv(id: &str, name: &str) -> String {
    let (code, output) = exec(id, &["printenv", name]);
    assert_eq!(code, 0, "`printenv {name}` in {id}: {output}");
    output.trim().to_owned()
}

#[test]
fn staging_and_production_are_two_stacks_with_their_own_data() {
    let stack = Stack::new("envstage");
    let staging = with_staging(&stack);
    let sha1 = ship_v1_to_both(&stack, &staging);

    // Two stacks: production's two containers are its own, staging has its own two.
    assert_eq!(
        containers(&stack.project).len(),
        2,
        "production is still `{}` alone",
        stack.project
    );
    let staging_server = id(&staging.project, "server");
    id(&staging.project, "db");

    // Their own data: rows written through staging never show through production.
    let production_before = stack.visits("v1");
    let counts: Vec<u64> = (0..3).map(|_| visits(&page(staging.port, "v1"))).collect();
    assert!(
        counts.windows(2).all(|w| w[1] == w[0] + 1),
        "each visit through staging adds a row there: {counts:?}"
    );
    assert_eq!(
        stack.visits("v1"),
        production_before + 1,
        "production counts its own visits only"
    );

    // Staging's build log is in its own folder, named like production's; production's folder
    // has none of staging's.
    let logs = build_logs(&stack.root.join("envs/staging/build-logs"));
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_log_name(&logs[0], &sha1, "sam");
    let production_logs = build_logs(&stack.root.join("build-logs"));
    assert_eq!(production_logs.len(), 1, "{production_logs:?}");
    assert_log_name(&production_logs[0], &sha1, "alice");

    // Each app is told which environment it runs in.
    assert_eq!(printenv(&staging_server, "DEPLOY_ENV"), "staging");
    assert_eq!(
        printenv(&id(&stack.project, "server"), "DEPLOY_ENV"),
        "production"
    );

    // Staging moves on and rolls back; production's containers are never touched.
    let production = (id(&stack.project, "server"), id(&stack.project, "db"));
    stack.write("VERSION", "v2\n");
    let sha2 = stack.commit("release v2");
    let push = stack.push_ref("HEAD:refs/heads/staging", "sam");
    assert!(push.output.contains("deployed"), "{}", push.output);
    assert_names(&push, "staging");
    page(staging.port, "v2");
    page(stack.port, "v1");
    let out = stack.deploy(&["--env", "staging", "--revision", &sha1]);
    assert!(out.status.success(), "staging rollback: {}", text(&out));
    page(staging.port, "v1");
    page(stack.port, "v1");
    assert_eq!(
        (id(&stack.project, "server"), id(&stack.project, "db")),
        production,
        "production's containers are the same ones"
    );

    // Each environment has its own ledger and status.
    let staged = history(&stack, "staging");
    let revisions: Vec<&str> = staged
        .iter()
        .map(|r| r["revision"].as_str().unwrap())
        .collect();
    assert_eq!(
        revisions,
        [sha1.as_str(), sha2.as_str(), sha1.as_str()],
        "{staged:#?}"
    );
    assert_eq!(staged[0]["trigger"], "rollback", "{staged:#?}");
    let produced = history(&stack, "production");
    assert_eq!(produced.len(), 1, "{produced:#?}");
    assert_eq!(produced[0]["revision"], sha1.as_str());
    assert_eq!(stack.history(), produced, "production is the default");
    let status = json(&stack, &["status", "--json", "--env", "staging"]);
    assert_eq!(status["live"]["revision"], sha1.as_str(), "{status:#}");
    let entry = listed(&stack, "staging");
    assert_eq!(entry["branch"], "staging", "{entry:#}");
    assert_eq!(entry["revision"], sha1.as_str(), "{entry:#}");
    // Who deployed what is live: the rollback's user, the newest row of staging's history.
    assert_eq!(entry["deployed_by"], staged[0]["user"], "{entry:#}");
    assert_eq!(entry["preview"], false, "{entry:#}");
    assert!(entry["expires"].is_null(), "{entry:#}");
}

#[test]
fn a_preview_is_seeded_from_staging_isolated_and_removed_with_its_branch() {
    let stack = Stack::new("envprev");
    let staging = with_staging(&stack);
    let preview_port = with_previews(&stack);
    let preview = format!("{}-feature-login", stack.project);
    let _preview_made = Cleanup(preview.clone());
    ship_v1_to_both(&stack, &staging);

    // Staging's rows, then a dump of them in staging's backups.
    let mut dumped = 0;
    for _ in 0..3 {
        dumped = visits(&page(staging.port, "v1"));
    }
    assert!(dumped >= 3, "staging counted its visits: {dumped}");
    let out = stack.deploy(&["backup", "--env", "staging"]);
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let backups = stack.root.join("envs/staging/backups");
    assert!(!printed.is_empty(), "deploy backup names its dump");
    for dump in printed.lines().map(std::path::Path::new) {
        assert!(
            dump.starts_with(&backups) && dump.is_file(),
            "a dump of staging's database in {}: {printed}",
            backups.display()
        );
    }

    // The preview: its own page, its data starting from staging's dump.
    stack.write("VERSION", "login\n");
    let sha = stack.commit("the login page");
    let push = stack.push_ref("HEAD:refs/heads/feature/login", "dana");
    assert!(push.output.contains("deployed"), "{}", push.output);
    assert_names(&push, "feature-login");
    let first = visits(&page(preview_port, "login"));
    assert!(
        first > dumped,
        "the preview starts from staging's {dumped} rows, it shows {first}"
    );
    let entry = listed(&stack, "feature-login");
    assert_eq!(entry["preview"], true, "{entry:#}");
    assert_eq!(entry["branch"], "feature/login", "{entry:#}");
    assert_eq!(entry["revision"], sha.as_str(), "{entry:#}");
    let expires = entry["expires"]
        .as_str()
        .unwrap_or_else(|| panic!("a preview expires: {entry:#}"));
    let expires = chrono::DateTime::parse_from_rfc3339(expires)
        .unwrap_or_else(|e| panic!("`expires` is RFC 3339 ({e}): {entry:#}"));
    assert!(expires > chrono::Utc::now(), "{entry:#}");
    let staging_entry = listed(&stack, "staging");
    assert_eq!(staging_entry["preview"], false, "{staging_entry:#}");
    assert!(staging_entry["expires"].is_null(), "{staging_entry:#}");

    // Isolation: the preview's app cannot reach staging's or production's database, which
    // staging's own app does reach the same way.
    let preview_server = id(&preview, "server");
    let staging_db = ips(&id(&staging.project, "db"));
    assert!(!staging_db.is_empty(), "staging's database has an address");
    for ip in &staging_db {
        let (reached, said) = reaches_postgres(&id(&staging.project, "server"), ip);
        assert!(
            reached,
            "staging's app reaches its database at {ip}: {said}"
        );
    }
    for ip in staging_db.iter().chain(&ips(&id(&stack.project, "db"))) {
        let (reached, said) = reaches_postgres(&preview_server, ip);
        assert!(
            !reached,
            "the preview reached another environment's database at {ip}: {said}"
        );
    }
    assert_eq!(printenv(&preview_server, "DEPLOY_ENV"), "feature-login");
    // `limits` caps every container of the preview, though the compose file sets none.
    let host = block(async move {
        let docker = docker().await;
        let inspect = docker
            .inspect_container(&preview_server, None)
            .await
            .unwrap();
        inspect.host_config.unwrap()
    });
    assert_eq!(
        (host.memory, host.nano_cpus),
        (Some(1 << 30), Some(1_000_000_000)),
        "the preview's limits"
    );

    // Deleting the branch tears the preview down: nothing of it in Docker, only its ledger
    // and build logs on disk.
    let before = labelled(&preview);
    assert!(
        before.containers > 0 && before.networks > 0,
        "the preview ran: {before:?}"
    );
    let push = stack.push_ref(":feature/login", "dana");
    assert!(push.pushed, "{}", push.output);
    assert_names(&push, "feature-login");
    assert_eq!(
        labelled(&preview),
        Labelled::default(),
        "nothing labelled `deploy.project={preview}` is left (there were {before:?})"
    );
    let dir = stack.root.join("envs/feature-login");
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert!(
        left.iter().all(
            |n| ["build-logs", "deploy.db", "deploy.db-shm", "deploy.db-wal"].contains(&n.as_str())
        ),
        "only the ledger and the build logs stay: {left:?}"
    );
    assert!(dir.join("deploy.db").is_file(), "{left:?}");
    let logs = build_logs(&dir.join("build-logs"));
    let deployed = (logs.iter())
        .find(|n| n.ends_with(&format!(" {sha} dana.log")))
        .unwrap_or_else(|| panic!("the preview's build log stays: {logs:?}"));
    assert_log_name(deployed, &sha, "dana");

    page(staging.port, "v1");
    page(stack.port, "v1");
}

#[test]
fn a_preview_past_its_ttl_is_removed_by_deploy_serve() {
    let stack = Stack::web("envttl");
    let port = port_file(&stack, "preview.env");
    stack.add_settings(
        "previews:\n  branches: [\"feature/*\"]\n  ttl: 2s\n  env_file: preview.env\n",
    );
    let preview = format!("{}-feature-ttl", stack.project);
    let _preview_made = Cleanup(preview.clone());
    stack.write("index.html", "version: ttl\n");
    stack.commit("ttl");
    let push = stack.push_ref("HEAD:refs/heads/feature/ttl", "tess");
    assert!(push.output.contains("deployed"), "{}", push.output);
    assert_names(&push, "feature-ttl");
    wait_for_page_at(port, "version: ttl", Duration::from_secs(60));

    // The ttl passes with no push and no daemon: the preview still runs.
    let entry = listed(&stack, "feature-ttl");
    let expires = entry["expires"]
        .as_str()
        .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
        .unwrap_or_else(|| panic!("a preview expires (RFC 3339): {entry:#}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while chrono::Utc::now() <= expires {
        assert!(
            Instant::now() < deadline,
            "a 2 s ttl ends at {expires}, not within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for_page_at(port, "version: ttl", Duration::from_secs(5));
    assert!(labelled(&preview).containers > 0);

    // deploy serve removes it.
    let _daemon = Daemon::start(&stack);
    let code = stack.root.join("envs/feature-ttl/code");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = labelled(&preview);
        if left.total() == 0 && !code.exists() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the expired preview is still there after 60 s: {left:?}, {} exists: {}\n{}",
            code.display(),
            code.exists(),
            common::daemon::serve_log(&stack)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_host_without_environments_upgrades_in_place() {
    let stack = Stack::new("envupgrade");
    let (_, push) = stack.push_version("v1", "alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let visits1 = stack.visits("v1");
    let (db, server) = (id(&stack.project, "db"), id(&stack.project, "server"));

    stack.add_settings("environments:\n  production: {branch: main}\n");
    let (sha2, push) = stack.push_version("v2", "alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    assert!(stack.visits("v2") > visits1, "the rows are still there");
    assert_eq!(id(&stack.project, "db"), db, "the database kept running");
    assert_ne!(id(&stack.project, "server"), server, "the app is v2's");
    assert_eq!(stack.history().len(), 2, "the ledger is the same one");
    let entry = listed(&stack, "production");
    assert_eq!(entry["revision"], sha2.as_str(), "{entry:#}");
    assert_eq!(entry["deployed_by"], "alice", "{entry:#}");
    assert_eq!(entry["preview"], false, "{entry:#}");
}

#[test]
fn bad_environment_settings_are_refused_with_one_line() {
    let stack = Stack::web("envbad");
    port_file(&stack, "preview.env");
    stack.write("index.html", "version: v1\n");
    stack.commit("v1");
    let push = stack.push("alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    stack.wait_for_page("version: v1", Duration::from_secs(60));
    let running = stack.container_ids();
    let settings = stack.root.join("deploy.yml");
    let good = std::fs::read_to_string(&settings).unwrap();

    // What is added to the good settings, and what the error names (one of each group).
    let cases: [(&str, &[&[&str]]); 3] = [
        (
            "environments:\n  production: {branch: main}\n  Staging: {branch: staging}\n",
            &[&["Staging"]],
        ),
        (
            "environments:\n  production: {branch: main}\n  staging: {branch: main}\n",
            &[&["production"], &["staging"]],
        ),
        (
            "previews:\n  branches: [\"*\"]\n  ttl: 1h\n  env_file: preview.env\n",
            &[&["*"], &["main", "production"]],
        ),
    ];
    for (n, (bad, culprits)) in cases.iter().enumerate() {
        std::fs::write(&settings, format!("{good}{bad}")).unwrap();
        let names = |said: &str| {
            culprits
                .iter()
                .all(|group| group.iter().any(|c| said.contains(c)))
        };

        let out = stack.deploy(&["env", "list", "--json"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!out.status.success(), "{bad}: {}", text(&out));
        assert!(
            lines.len() == 1 && names(lines[0]),
            "{bad}: one line naming {culprits:?}: {stderr}"
        );

        stack.write("index.html", &format!("version: bad {n}\n"));
        stack.commit(&format!("bad {n}"));
        let push = stack.push("alice");
        assert!(
            push.output
                .lines()
                .any(|l| l.starts_with("remote:") && names(l)),
            "{bad}: the push names {culprits:?}: {}",
            push.output
        );
        stack.wait_for_page("version: v1", Duration::from_secs(5));
        assert_eq!(stack.container_ids(), running, "{bad}: nothing changed");

        std::fs::write(&settings, &good).unwrap();
    }

    // An environment that does not exist.
    let out = stack.deploy(&["status", "--env", "nope"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        lines.len() == 1 && lines[0].contains("nope"),
        "one line naming `nope`: {stderr}"
    );
    assert_eq!(stack.container_ids(), running);

    // The good settings deploy again.
    stack.write("index.html", "version: v2\n");
    stack.commit("v2");
    let push = stack.push("alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    stack.wait_for_page("version: v2", Duration::from_secs(60));
}

#[test]
fn a_preview_past_max_previews_is_refused_and_nothing_of_it_is_made() {
    let stack = Stack::web("envmax");
    let port = port_file(&stack, "preview.env");
    stack.add_settings(
        "previews:\n  branches: [\"feature/*\"]\n  env_file: preview.env\n  max_previews: 1\n",
    );
    let first = format!("{}-feature-one", stack.project);
    let _first_made = Cleanup(first.clone());
    let second = format!("{}-feature-two", stack.project);
    let _second_made = Cleanup(second.clone());
    stack.write("index.html", "version: one\n");
    stack.commit("one");
    let push = stack.push_ref("HEAD:refs/heads/feature/one", "tess");
    assert!(push.output.contains("deployed"), "{}", push.output);
    wait_for_page_at(port, "version: one", Duration::from_secs(60));

    let push = stack.push_ref("HEAD:refs/heads/feature/two", "tess");
    assert!(
        push.output.lines().any(|l| l.starts_with("remote:")
            && l.contains("max_previews")
            && l.contains("feature/two")),
        "the refusal names the cap and the branch: {}",
        push.output
    );
    assert_eq!(labelled(&second), Labelled::default());
    assert!(
        !stack.root.join("envs/feature-two/code").exists(),
        "no work tree for the refused preview"
    );
    wait_for_page_at(port, "version: one", Duration::from_secs(5));
    let list = json(&stack, &["env", "list", "--json"]);
    let previews: Vec<&str> = (list.as_array().unwrap().iter())
        .filter(|e| e["preview"] == true)
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(previews, ["feature-one"], "{list:#}");
}

#[test]
fn under_deploy_serve_each_environment_keeps_its_port_across_a_restart_and_down() {
    let stack = Stack::web("envserve");
    let staging_port = port_file(&stack, "staging.env");
    stack.add_settings(
        "environments:\n  production: {branch: main}\n  staging: {branch: staging, env_file: staging.env}\n",
    );
    let staging = format!("{}-staging", stack.project);
    let _staging_made = Cleanup(staging.clone());
    let daemon = Daemon::start(&stack);

    stack.write("index.html", "version: prod\n");
    stack.commit("prod");
    assert!(stack.push("alice").output.contains("deployed"));
    stack.write("index.html", "version: stage\n");
    stack.commit("stage");
    let push = stack.push_ref("HEAD:refs/heads/staging", "sam");
    assert!(push.output.contains("deployed"), "{}", push.output);
    wait_for_page_at(stack.port, "version: prod", Duration::from_secs(30));
    wait_for_page_at(staging_port, "version: stage", Duration::from_secs(30));
    // The proxy owns both ports: no container publishes one.
    for project in [stack.project.as_str(), staging.as_str()] {
        for c in containers(project) {
            let published: Vec<_> = (c.ports.unwrap_or_default().into_iter())
                .filter(|p| p.public_port.is_some())
                .collect();
            assert!(published.is_empty(), "{project}: {published:?}");
        }
    }

    // A new daemon routes both environments again from their containers, with no deploy.
    daemon.kill();
    let _daemon = Daemon::start(&stack);
    wait_for_page_at(stack.port, "version: prod", Duration::from_secs(10));
    wait_for_page_at(staging_port, "version: stage", Duration::from_secs(10));

    // `deploy down --env staging` closes staging's port only.
    let out = stack.deploy(&["down", "--env", "staging"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(containers(&staging).is_empty());
    let answer = http_answer(staging_port, "/").unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.0 503"), "{answer}");
    wait_for_page_at(stack.port, "version: prod", Duration::from_secs(5));
}
