//! Issue #13: `deploy cancel` and the stages' bounds, through real pushes against the real
//! engine. A canceled deploy leaves nothing of itself running, frees the lock, records who
//! canceled it, and the version it was replacing serves again.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Commits `version` as the page and pushes it in the background.
fn push_in_background(
    stack: &Stack,
    version: &str,
) -> std::thread::JoinHandle<std::process::Output> {
    stack.write("index.html", &format!("version: {version}\n"));
    stack.commit(version);
    let work = stack.work.clone();
    std::thread::spawn(move || {
        run(Command::new("git")
            .current_dir(work)
            .args(["push", "-q", "prod", "main"])
            .env("DEPLOY_USER", "dana"))
    })
}

fn deploy_v1(stack: &Stack) {
    stack.write("index.html", "version: v1\n");
    stack.commit("v1");
    let push = stack.push("dana");
    assert!(
        push.pushed && push.output.contains("deployed"),
        "{}",
        push.output
    );
    stack.wait_for_page("version: v1", Duration::from_secs(30));
}

/// Waits, bounded, until `ready` holds.
fn wait_until(what: &str, within: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a process whose command line holds `marker` runs on this host (BuildKit's
/// build steps and containers' processes are the host's).
fn process_runs(marker: &str) -> bool {
    let out = run(Command::new("pgrep").args(["-f", marker]));
    out.status.success()
}

/// Whether nobody holds the ROOT lock.
fn lock_is_free(stack: &Stack) -> bool {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(stack.root.join("deploy.lock"))
        .unwrap();
    file.try_lock().is_ok()
}

/// `deploy cancel` as the operator, and what the ledger then says of the newest deploy.
fn cancel(stack: &Stack) -> serde_json::Value {
    let out = run(Command::new(DEPLOY)
        .args(["cancel", "--root"])
        .arg(&stack.root)
        .env("DEPLOY_USER", "olga"));
    assert!(
        out.status.success(),
        "deploy cancel failed:\n{}",
        text(&out)
    );
    assert!(text(&out).contains("canceled"), "{}", text(&out));
    stack.history().into_iter().next().unwrap()
}

fn assert_canceled_by_olga(row: &serde_json::Value) {
    assert_eq!(row["status"], "canceled", "{row}");
    assert_eq!(row["error"], "canceled by olga", "{row}");
}

/// A Dockerfile whose app never listens: its process only prints `marker` and sleeps, so the
/// deploy waits for it until `health_timeout`.
fn never_ready(marker: &str) -> String {
    format!(
        "FROM python:3.11-slim\nWORKDIR /srv\nCOPY index.html /srv/\nCMD [\"sh\", \"-c\", \"echo {marker}; sleep 600\"]\n"
    )
}

/// Pushes v2, waits until a process whose command line holds `marker` runs (the stage to
/// cancel in), cancels as olga, and checks what every cancel must leave: the row canceled by
/// her, the lock free and `marker`'s process gone within 10 s, the pusher told.
fn cancel_while(stack: &Stack, stage: &str, marker: &str) {
    let push = push_in_background(stack, "v2");
    wait_until(stage, Duration::from_secs(120), || process_runs(marker));
    assert_canceled_by_olga(&cancel(stack));
    wait_until("the lock freed", Duration::from_secs(10), || {
        lock_is_free(stack)
    });
    wait_until("its process gone", Duration::from_secs(10), || {
        !process_runs(marker)
    });
    let pushed = text(&push.join().unwrap());
    assert!(pushed.contains("canceled by olga"), "{pushed}");
}

fn v1_serves(stack: &Stack) -> bool {
    stack.get("/").is_some_and(|p| p.contains("version: v1"))
}

#[test]
fn a_cancel_during_a_long_build_aborts_it_and_the_old_version_serves_throughout() {
    let stack = Stack::web("cancelbuild");
    deploy_v1(&stack);
    let marker = format!("building-{}", stack.project);
    stack.write(
        "Dockerfile",
        &web_dockerfile(&format!("RUN echo {marker} && sleep 600\n")),
    );
    cancel_while(&stack, "the long build step", &marker);
    assert!(v1_serves(&stack), "v1 still serves");
}

#[test]
fn a_cancel_during_the_health_wait_puts_the_old_version_back() {
    let stack = Stack::web("cancelhealth");
    deploy_v1(&stack);
    // v2 never listens, so the deploy waits for it until `health_timeout` (90 s).
    let marker = format!("never-ready-{}", stack.project);
    stack.write("Dockerfile", &never_ready(&marker));
    cancel_while(&stack, "v2's container", &marker);
    stack.wait_for_page("version: v1", Duration::from_secs(10));
}

#[test]
fn a_cancel_during_the_release_command_stops_and_removes_it() {
    let stack = Stack::web("cancelrelease");
    deploy_v1(&stack);
    let marker = format!("migrating-{}", stack.project);
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n  web:\n    build: .\n    ports: [\"${{WEB_PORT}}:8000\"]\n    stop_grace_period: 1s\nx-deploy:\n  release:\n    service: web\n    command: [\"sh\", \"-c\", \"echo {marker}; sleep 600\"]\n"
        ),
    );
    cancel_while(&stack, "the release command", &marker);
    let release = format!("{}-web-release", stack.project);
    let names: Vec<String> = containers(&stack.project)
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .collect();
    assert!(
        !names.iter().any(|n| n.ends_with(&release)),
        "the release container is removed: {names:?}"
    );
    assert!(v1_serves(&stack), "v1 still serves");
}

#[test]
fn a_build_past_build_timeout_fails_with_the_stage_named() {
    let stack = Stack::web("buildtimeout");
    stack.add_settings("build_timeout: 5s\n");
    let marker = format!("slow-build-{}", stack.project);
    stack.write(
        "Dockerfile",
        &web_dockerfile(&format!("RUN echo {marker} && sleep 600\n")),
    );
    stack.write("index.html", "version: v1\n");
    stack.commit("v1");
    let push = stack.push("dana");
    assert!(
        push.output
            .contains("the build stage took longer than `build_timeout` (5.0s)"),
        "{}",
        push.output
    );
    wait_until("the build step gone", Duration::from_secs(10), || {
        !process_runs(&marker)
    });
    assert_eq!(stack.history()[0]["status"], "failed");
}

#[test]
fn cancel_refuses_what_it_cannot_cancel_with_one_line() {
    let stack = Stack::empty("cancelbad");
    let refused = |args: &[&str], line: &str| {
        let out = stack.deploy(args);
        assert!(!out.status.success(), "{}", text(&out));
        assert_eq!(text(&out).trim(), line);
    };
    refused(&["cancel"], "deploy: no deploy is running");
    refused(
        &["cancel", "--env", "staging"],
        "deploy: there is no environment `staging` on this host: deploy.yml names `production`, and no preview has that name",
    );
    refused(
        &["cancel", "42"],
        "deploy: there is no deploy #42 in the ledger; `deploy history` lists them",
    );
    // A deploy that failed (its compose file has no service) is over.
    stack.write("docker-compose.yml", "services: {}\n");
    stack.commit("empty");
    assert!(!stack.push("dana").output.contains("deployed"));
    refused(
        &["cancel", "1"],
        "deploy: deploy #1 already ended as failed; only a running or queued deploy can be canceled",
    );
}

/// Behind `deploy serve` the deploy runs in the daemon: the cancel reaches it there, and the
/// old version answers every request throughout, the new one having started beside it.
#[test]
fn a_cancel_reaches_a_deploy_in_the_daemon_and_no_request_fails() {
    let stack = Stack::web("canceldaemon");
    let _daemon = common::daemon::Daemon::start(&stack);
    deploy_v1(&stack);
    let load = common::daemon::Load::start(stack.port);
    let marker = format!("never-ready-{}", stack.project);
    stack.write("Dockerfile", &never_ready(&marker));
    cancel_while(&stack, "v2's container", &marker);
    let (ok, failed, when) = load.finish();
    assert_eq!(failed, 0, "failed requests at {when:?} ({ok} succeeded)");
    assert!(ok > 0);
    assert!(v1_serves(&stack), "v1 still serves");
}

/// Ctrl-C in the pusher's terminal (SIGINT to the push's process group, hook included) does
/// not stop the deploy: the terminal was told how to cancel, and the deploy goes live.
#[test]
fn ctrl_c_in_the_pushers_terminal_does_not_stop_the_deploy() {
    use std::os::unix::process::CommandExt;
    let stack = Stack::web("cancelctrlc");
    deploy_v1(&stack);
    let marker = format!("slow-step-{}", stack.project);
    stack.write(
        "Dockerfile",
        &web_dockerfile(&format!("RUN echo {marker} && sleep 3\n")),
    );
    stack.write("index.html", "version: v2\n");
    stack.commit("v2");
    let push = Command::new("git")
        .current_dir(&stack.work)
        .args(["push", "-q", "prod", "main"])
        .env("DEPLOY_USER", "dana")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    wait_until("the slow build step", Duration::from_secs(120), || {
        process_runs(&marker)
    });
    let group = i32::try_from(push.id()).unwrap();
    let interrupted = run(Command::new("kill").args(["-INT", "--", &format!("-{group}")]));
    assert!(interrupted.status.success(), "{}", text(&interrupted));

    // git itself stops; the terminal was told beforehand how to cancel.
    let pushed = text(&push.wait_with_output().unwrap());
    assert!(
        pushed.contains("`deploy cancel 2` on the host stops it; Ctrl-C here does not"),
        "{pushed}"
    );
    stack.wait_for_page("version: v2", Duration::from_secs(120));
    wait_until("the deploy recorded", Duration::from_secs(30), || {
        stack.history()[0]["status"] == "succeeded"
    });
}

/// The status of the stack as JSON.
fn status(stack: &Stack) -> serde_json::Value {
    let out = stack.deploy(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A push that waits behind a long deploy is queued in the ledger: `deploy status` shows
/// both (the running one with its stage), and a cancel of the queued one by its id ends its
/// push before it started, the running one untouched. Under `deploy serve` when `daemon`.
fn queued_deploy_is_shown_and_canceled(prefix: &str, daemon: bool) {
    let stack = Stack::web(prefix);
    let _daemon = daemon.then(|| common::daemon::Daemon::start(&stack));
    deploy_v1(&stack);
    let marker = format!("long-build-{}", stack.project);
    stack.write(
        "Dockerfile",
        &web_dockerfile(&format!("RUN echo {marker} && sleep 600\n")),
    );
    let running = push_in_background(&stack, "v2");
    wait_until("the long build step", Duration::from_secs(120), || {
        process_runs(&marker)
    });
    stack.write("Dockerfile", &web_dockerfile(""));
    let queued = push_in_background(&stack, "v3");
    wait_until("the queued row", Duration::from_secs(60), || {
        status(&stack)["queued"]
            .as_array()
            .is_some_and(|q| !q.is_empty())
    });
    let now = status(&stack);
    assert_eq!(now["running"]["stage"], "build", "{now:#}");
    let id = now["queued"][0]["id"].as_i64().unwrap();
    let shown = text(&stack.deploy(&["status"]));
    assert!(shown.contains(&format!("queued   #{id} ")), "{shown}");
    assert!(shown.contains("running  #"), "{shown}");

    let out = run(Command::new(DEPLOY)
        .args(["cancel", &id.to_string(), "--root"])
        .arg(&stack.root)
        .env("DEPLOY_USER", "olga"));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("canceled before it started"),
        "{}",
        text(&out)
    );
    let pushed = text(&queued.join().unwrap());
    assert!(pushed.contains("canceled by olga while queued"), "{pushed}");
    let row = stack.history().into_iter().find(|r| r["id"] == id).unwrap();
    assert_eq!(row["status"], "canceled", "{row}");
    assert!(process_runs(&marker), "the running deploy goes on");

    cancel(&stack);
    let running_id = now["running"]["id"].clone();
    let row = stack.history().into_iter().find(|r| r["id"] == running_id);
    assert_canceled_by_olga(&row.unwrap());
    let _ = running.join();
}

#[test]
fn a_queued_deploy_is_shown_and_canceled_by_its_id() {
    queued_deploy_is_shown_and_canceled("cancelqueued", false);
}

#[test]
fn a_deploy_queued_in_the_daemon_is_shown_and_canceled_by_its_id() {
    queued_deploy_is_shown_and_canceled("cancelqueuedd", true);
}
