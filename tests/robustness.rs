//! Issue #3: never take down what runs, never lose data, never need a manual unlock. Each
//! test injects a fault against the real engine and checks what a user would: the old
//! version still answers, the rows are still there, the next push just works.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Pushes a commit, expects the deploy to fail saying `expect`, and checks that nothing
/// new runs and the old version still answers.
fn push_refused(stack: &Stack, what: &str, expect: &[&str]) {
    let before = stack.container_ids();
    let sha = stack.commit(what);
    let push = stack.push("mallory");
    assert!(
        push.output.contains("deploy failed"),
        "{what}: the push must say it failed:\n{}",
        push.output
    );
    for e in expect {
        assert!(
            push.output.contains(e),
            "{what}: the push must say `{e}`:\n{}",
            push.output
        );
    }
    let history = stack.history();
    assert_eq!(history[0]["revision"], sha.as_str(), "{what}");
    assert_eq!(history[0]["status"], "failed", "{what}");
    assert_eq!(stack.container_ids(), before, "{what}: nothing new may run");
}

/// The fixture's compose file with `lines` added to the `server` service.
fn server_with(stack: &Stack, base: &str, lines: &str) {
    let compose = base.replacen("    build: .\n", &format!("    build: .\n{lines}"), 1);
    stack.write("docker-compose.yml", &compose);
}

#[test]
fn issue3_bad_pushes_never_take_down_the_running_version() {
    let stack = Stack::new("bad");
    let (_, push) = stack.push_version("v1", "alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let rows = stack.visits("v1");

    // Containers come back after an engine restart: the default restart policy.
    let server = service_container(&stack.project, "server");
    let policy = block(async {
        let docker = docker().await;
        let inspect = docker
            .inspect_container(server.id.as_deref().unwrap(), None)
            .await
            .unwrap();
        inspect
            .host_config
            .unwrap()
            .restart_policy
            .unwrap()
            .name
            .unwrap()
            .to_string()
    });
    assert_eq!(policy, "unless-stopped");

    let compose = stack.compose();
    let dockerfile = std::fs::read_to_string(stack.work.join("Dockerfile")).unwrap();

    // A Dockerfile error: the build fails, the running version is untouched.
    stack.write("Dockerfile", "FROM python:3.11-slim\nRUN false\n");
    push_refused(
        &stack,
        "dockerfile error",
        &["build server", "failed to build"],
    );
    stack.write("Dockerfile", &dockerfile);

    // Every refused compose key says why and names the allowance.
    let refusals = [
        (
            "    privileged: true\n",
            "services.server.privileged",
            "privileged: true",
        ),
        (
            "    cap_add: [SYS_ADMIN]\n",
            "services.server.cap_add",
            "cap_add",
        ),
        (
            "    devices: [\"/dev/fuse:/dev/fuse\"]\n",
            "services.server.devices",
            "devices: true",
        ),
        (
            "    pid: host\n",
            "services.server.pid",
            "host_namespaces: true",
        ),
        (
            "    ipc: host\n",
            "services.server.ipc",
            "host_namespaces: true",
        ),
        (
            "    userns_mode: host\n",
            "services.server.userns_mode",
            "host_namespaces: true",
        ),
        (
            "    security_opt: [\"seccomp=unconfined\"]\n",
            "services.server.security_opt",
            "unconfined: true",
        ),
        (
            "    volumes: [\"/var/run/docker.sock:/var/run/docker.sock\"]\n",
            "services.server.volumes",
            "bind_mounts",
        ),
        (
            "    volumes: [\"/etc:/host-etc:ro\"]\n",
            "services.server.volumes",
            "bind_mounts",
        ),
    ];
    for (lines, path, allowance) in refusals {
        server_with(&stack, &compose, lines);
        push_refused(&stack, path, &[path, "refused", allowance, "deploy.yml"]);
    }
    // network_mode: host cannot be combined with the fixture's networks; give it its own.
    let host_net = compose.replacen(
        "    networks:\n      - default\n      - backend\n",
        "    network_mode: host\n",
        1,
    );
    stack.write("docker-compose.yml", &host_net);
    push_refused(
        &stack,
        "network_mode: host",
        &["services.server.network_mode", "refused", "host_namespaces"],
    );

    // A symlink in the pushed tree cannot smuggle a host path in as a relative bind mount.
    std::os::unix::fs::symlink("/etc", stack.work.join("config")).unwrap();
    server_with(&stack, &compose, "    volumes: [\"./config:/config:ro\"]\n");
    push_refused(
        &stack,
        "symlinked bind mount",
        &["services.server.volumes", "refused"],
    );
    std::fs::remove_file(stack.work.join("config")).unwrap();

    // Malformed YAML, with line and column.
    stack.write(
        "docker-compose.yml",
        &format!("{compose}\n  bad: [unclosed\n"),
    );
    push_refused(&stack, "malformed yaml", &["line", "column"]);

    // An unknown key, with its path.
    server_with(&stack, &compose, "    colour: blue\n");
    push_refused(
        &stack,
        "unknown key",
        &["services.server.colour: not supported"],
    );

    // A missing secret file and a missing env_file.
    stack.write(
        "docker-compose.yml",
        &compose.replace("./.secrets/db_password", "./.secrets/missing"),
    );
    push_refused(
        &stack,
        "missing secret",
        &["secrets.db_password", ".secrets/missing"],
    );
    server_with(&stack, &compose, "    env_file: [settings.env]\n");
    push_refused(
        &stack,
        "missing env_file",
        &["services.server.env_file", "settings.env"],
    );
    stack.write("docker-compose.yml", &compose);

    // A Dockerfile that is not there.
    std::fs::remove_file(stack.work.join("Dockerfile")).unwrap();
    push_refused(&stack, "missing dockerfile", &["Dockerfile"]);
    stack.write("Dockerfile", &dockerfile);

    // Too little free disk: refused before anything is touched.
    let settings = std::fs::read_to_string(stack.root.join("deploy.yml")).unwrap();
    let tight = settings.replace("min_free_space: 1GiB", "min_free_space: 100000GiB");
    assert_ne!(tight, settings);
    std::fs::write(stack.root.join("deploy.yml"), tight).unwrap();
    stack.write("VERSION", "v-disk\n");
    push_refused(&stack, "free space", &["free", "min_free_space"]);
    std::fs::write(stack.root.join("deploy.yml"), settings).unwrap();

    // An unknown revision changes nothing, not even the ledger.
    let rows_before = stack.history().len();
    let out = stack.deploy(&["--revision", "no-such-rev"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("unknown revision `no-such-rev`"),
        "{}",
        text(&out)
    );
    assert_eq!(stack.history().len(), rows_before);

    // A crash-looping new version: reported, the old version serves again.
    // It prints the database password before dying: the build log gets its last lines,
    // with the password redacted.
    let crash = r#"CMD ["python", "-c", "print('pw=' + open('/run/secrets/db_password').read()); raise SystemExit(3)"]"#;
    stack.write(
        "Dockerfile",
        &dockerfile.replace(r#"CMD ["python", "/app/app.py"]"#, crash),
    );
    stack.write("VERSION", "v-crash\n");
    push_refused(
        &stack,
        "crash loop",
        &[
            "server",
            "did not become ready",
            "putting the previous containers back",
        ],
    );
    let log = std::fs::read_to_string(stack.root.join("build-logs/latest")).unwrap();
    assert!(
        log.contains("log lines of the new `server` container"),
        "{log}"
    );
    assert!(
        log.contains("pw=***"),
        "the secret is redacted in the log tail: {log}"
    );
    assert!(!log.contains(PASSWORD));
    stack.write("Dockerfile", &dockerfile);
    assert!(stack.visits("v1") > rows, "the rows survive every bad push");

    // A hostile user name: the log stays inside build-logs, named safely.
    let _ = std::fs::remove_file("/tmp/pwned");
    let (sha, push) = {
        stack.write("VERSION", "v2\n");
        let sha = stack.commit("v2");
        let out = run(Command::new("git")
            .current_dir(&stack.work)
            .args(["push", "-q", "prod", "main"])
            .env("DEPLOY_USER", "../../evil\nname $(touch /tmp/pwned) ;rm"));
        (sha, text(&out))
    };
    assert!(push.contains("deployed"), "{push}");
    let logs = stack.logs();
    let newest = logs
        .iter()
        .find(|l| l.contains(&sha))
        .expect("a log for the hostile push");
    assert!(
        !newest.contains('/') && !newest.contains("..") && !newest.contains('\n'),
        "{newest:?}"
    );
    assert!(stack.root.join("build-logs").join(newest).is_file());
    assert!(
        !std::path::Path::new("/tmp/pwned").exists(),
        "a user name ran as shell"
    );
    let rows = stack.visits("v2");

    // A branch name with shell characters is data: not deployed, nothing run.
    let _ = std::fs::remove_file("/tmp/pwned-branch");
    let out = run(Command::new("git").current_dir(&stack.work).args([
        "push",
        "prod",
        "HEAD:refs/heads/x$(touch${IFS}/tmp/pwned-branch);y",
    ]));
    assert!(text(&out).contains("not deployed"), "{}", text(&out));
    assert!(
        !std::path::Path::new("/tmp/pwned-branch").exists(),
        "a branch name ran as shell"
    );

    // `deploy down` stops the stack and keeps the data; `deploy` brings it back.
    let out = stack.deploy(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(containers(&stack.project).is_empty());
    assert!(stack.get("/").is_none(), "nothing answers after down");
    let out = stack.deploy(&[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stack.visits("v2") > rows, "the rows survive `deploy down`");
}

#[test]
fn issue3_pushes_that_arrive_together_are_serialized() {
    let stack = Stack::new("queue");
    let (_, push) = stack.push_version("v1", "alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let rows = stack.visits("v1");

    // Three pushes from three developers: the second starts once the first deploys (it holds
    // the lock), the third once the second says it waits.
    let mut handles = Vec::new();
    let mut shas = Vec::new();
    for (i, user) in ["bob", "carol", "dave"].iter().enumerate() {
        stack.write("VERSION", &format!("v{}\n", i + 2));
        shas.push(stack.commit(&format!("v{}", i + 2)));
        let (handle, lines) = spawn_push(&stack, user);
        let until = if i == 0 {
            "-----> checkout"
        } else {
            "waiting for the deploy of"
        };
        wait_for_line(&lines, until);
        handles.push(handle);
    }
    let outputs: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(
        outputs
            .iter()
            .any(|o| o.contains("waiting for the deploy of")),
        "a waiting push says who it waits for: {outputs:#?}"
    );

    // The newest version serves, and every push is in the ledger.
    assert!(stack.visits("v4") > rows);
    let history = stack.history();
    for sha in &shas {
        assert!(
            history.iter().any(|r| r["revision"] == sha.as_str()),
            "{sha} not logged: {history:#?}"
        );
    }
    // v3's push found v4 already pushed when it got the lock: superseded, not deployed.
    let v3 = history
        .iter()
        .find(|r| r["revision"] == shas[1].as_str())
        .unwrap();
    assert_eq!(v3["status"], "superseded", "{history:#?}");
    assert_eq!(history[0]["revision"], shas[2].as_str());
    assert_eq!(history[0]["status"], "succeeded");
    assert_eq!(stack.deploy(&["status"]).status.code(), Some(0));
}

/// A `git push prod main` as `user` in the background: its output so far line by line, and
/// all of it when it ends.
fn spawn_push(
    stack: &Stack,
    user: &str,
) -> (
    std::thread::JoinHandle<String>,
    std::sync::mpsc::Receiver<String>,
) {
    let mut child = Command::new("git")
        .current_dir(&stack.work)
        .args(["push", "prod", "main"])
        .env("DEPLOY_USER", user)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        let _ = child.wait();
        all
    });
    (handle, rx)
}

/// Waits (two minutes at most) for a line containing `marker`.
fn wait_for_line(lines: &std::sync::mpsc::Receiver<String>, marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(marker) => return,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("`{marker}` never appeared: {seen:#?}");
}

/// Starts `deploy --revision <sha>` and SIGKILLs it once its output shows `marker` and then
/// `ready()` holds (checked every 100 ms, for a minute at most).
fn kill_deploy_at(stack: &Stack, sha: &str, marker: &str, ready: impl Fn() -> bool) {
    let mut child = Command::new(DEPLOY)
        .args(["--revision", sha, "--root"])
        .arg(&stack.root)
        .env("DEPLOY_USER", "killer")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains(marker) {
            let until = Instant::now() + Duration::from_secs(60);
            while !ready() {
                assert!(
                    Instant::now() < until,
                    "after `{marker}`, the moment to kill never came"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(
            Instant::now() < deadline,
            "`{marker}` never appeared: {seen:#?}"
        );
    }
    let _ = child.wait();
    panic!("the deploy ended before `{marker}`: {seen:#?}");
}

#[test]
fn issue3_sigkill_at_any_step_needs_no_manual_unlock() {
    let stack = Stack::new("kill");
    let (_, push) = stack.push_version("v1", "alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let rows = stack.visits("v1");

    // Killed while building.
    stack.write("VERSION", "v2\n");
    let sha2 = stack.commit("v2");
    git(
        &stack.work,
        &["push", "-q", "prod", "HEAD:refs/heads/staging"],
    );
    kill_deploy_at(&stack, &sha2, "builder: ", || true);
    let out = stack.deploy(&["--revision", &sha2]);
    assert!(
        out.status.success(),
        "the next deploy just works: {}",
        text(&out)
    );
    assert!(text(&out).contains("marked abandoned"), "{}", text(&out));
    assert!(stack.visits("v2") > rows);

    // Killed while swapping containers: the old container stopped, the new one running but
    // not ready yet (v3's app takes 6 s to listen). The next deploy finds it ready within its
    // wait, so the interrupted deploy goes live (the rule of `pipeline/reconcile.rs`).
    stack.write("VERSION", "v3\n");
    let compose = stack.compose().replace(
        "    stop_grace_period: 1s\n",
        "    stop_grace_period: 1s\n    command: [\"sh\", \"-c\", \"sleep 6; exec python /app/app.py\"]\n",
    );
    assert!(compose.contains("sleep 6"), "{compose}");
    stack.write("docker-compose.yml", &compose);
    let sha3 = stack.commit("v3");
    git(
        &stack.work,
        &["push", "-q", "prod", "HEAD:refs/heads/staging"],
    );
    let (old, new) = (
        format!("/{}-server-{}", stack.project, &sha2[..12]),
        format!("/{}-server-{}", stack.project, &sha3[..12]),
    );
    kill_deploy_at(&stack, &sha3, "stopping `", || {
        let all = containers(&stack.project);
        let running = |name: &str| {
            all.iter()
                .find(|c| c.names.iter().flatten().any(|n| n == name))
                .map(|c| c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING))
        };
        running(&old) == Some(false) && running(&new) == Some(true)
    });
    let push = stack.push("alice");
    assert!(
        push.output.contains("deployed"),
        "the next push just works: {}",
        push.output
    );
    assert!(
        push.output
            .contains("was interrupted after its containers were ready; it is live now"),
        "{}",
        push.output
    );
    assert!(stack.visits("v3") > rows);

    let history = stack.history();
    let status_of = |user: &str, sha: &str| -> Vec<String> {
        history
            .iter()
            .filter(|r| r["user"] == user && r["revision"] == sha)
            .map(|r| r["status"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(status_of("killer", &sha2), ["abandoned"], "{history:#?}");
    assert_eq!(status_of("killer", &sha3), ["succeeded"], "{history:#?}");
    // Nothing half-made is left: one container per service.
    let names: Vec<String> = containers(&stack.project)
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn issue3_retention_keeps_what_rollback_needs() {
    let stack = Stack::new("keep");
    stack.add_setting("retention: 2");
    let mut shas = Vec::new();
    for i in 1..=7 {
        let (sha, push) = stack.push_version(&format!("v{i}"), "alice");
        assert!(push.output.contains("deployed"), "v{i}: {}", push.output);
        shas.push(sha);
    }
    let rows = stack.visits("v7");

    // Only the last two successful revisions keep their images.
    let repo = format!("{}-server", stack.project);
    for (i, sha) in shas.iter().enumerate() {
        let kept = image_id(&format!("{repo}:{sha}")).is_some();
        assert_eq!(kept, i >= 5, "v{}: image kept = {kept}", i + 1);
    }

    // Rolling back to a pruned revision rebuilds it from git, and says so.
    let out = stack.deploy(&["--revision", &shas[0]]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("rebuilding it from git"),
        "{}",
        text(&out)
    );
    assert!(stack.visits("v1") > rows);
    assert!(image_id(&format!("{repo}:{}", shas[0])).is_some());

    // Every deploy's log is still there (fewer than 100 deploys).
    assert_eq!(stack.logs().len(), 8);
}
