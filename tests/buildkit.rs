//! Issue #14: builds run on BuildKit. Through a real `git push` on this engine: cache mounts
//! that outlive a build, stages a target does not need skipped, build secrets in no layer
//! and no log, failing builds that name their step and leave the running version alone,
//! and a build cache pruned down to `build_cache`.

mod common;

use std::sync::Mutex;

use common::*;
use futures_util::StreamExt;

/// The build cache is the engine's, shared by every project: a prune down to a small limit
/// removes other tests' cache mounts too, so the tests of this file that rely on the cache
/// outliving a push, or that prune it, run one at a time.
static CACHE: Mutex<()> = Mutex::new(());

const COMPOSE: &str = "services:\n  app:\n    build: .\n    stop_grace_period: 1s\n    healthcheck: {test: [CMD, 'true']}\n";

fn stack(prefix: &str) -> Stack {
    let stack = Stack::empty(prefix);
    stack.add_settings("min_free_space: 100MiB\nhealth_timeout: 60s\n");
    stack.write("docker-compose.yml", COMPOSE);
    stack
}

fn build_log(stack: &Stack) -> String {
    std::fs::read_to_string(stack.root.join("build-logs/latest")).unwrap()
}

#[test]
fn a_cache_mount_outlives_the_build_and_the_second_push_reuses_it() {
    let _one_at_a_time = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let stack = stack("bkcache");
    stack.write(
        "Dockerfile",
        "FROM debian:bookworm-slim\nCOPY VERSION /VERSION\nRUN --mount=type=cache,target=/cache sed 's/^/found in the cache: /' /cache/seen 2>/dev/null; cat /VERSION >> /cache/seen\nCMD [\"sleep\", \"infinity\"]\n",
    );
    let (_, first) = stack.push_version("v1", "alice");
    assert!(first.output.contains("deployed"), "{}", first.output);
    assert!(
        first.output.contains("builder: BuildKit"),
        "the log says which builder ran: {}",
        first.output
    );
    assert!(
        !first.output.contains("found in the cache: v"),
        "{}",
        first.output
    );

    let (_, second) = stack.push_version("v2", "alice");
    assert!(second.output.contains("deployed"), "{}", second.output);
    assert!(
        second.output.contains("found in the cache: v1"),
        "the second build found what the first left in its cache mount: {}",
        second.output
    );
    // Each step is named once, with its timing.
    let log = build_log(&stack);
    let named = log
        .lines()
        .filter(|l| l.ends_with("RUN --mount=type=cache,target=/cache sed 's/^/found in the cache: /' /cache/seen 2>/dev/null; cat /VERSION >> /cache/seen"))
        .count();
    assert_eq!(named, 1, "{log}");
    assert!(log.lines().any(|l| l.contains(" DONE ")), "{log}");
    assert!(!log.contains("moby.buildkit.trace"), "{log}");
}

#[test]
fn stages_the_target_does_not_need_never_run() {
    let stack = stack("bkstage");
    // `unused` comes before the target and `later` after it; running either fails.
    stack.write(
        "Dockerfile",
        &format!(
            "FROM debian:bookworm-slim AS unused\nRUN echo unused-stage-ran && false\n\
             FROM debian:bookworm-slim AS app\nRUN echo app-stage-ran-{}\nCMD [\"sleep\", \"infinity\"]\n\
             FROM app AS later\nRUN echo later-stage-ran && false\n",
            stack.project
        ),
    );
    stack.write(
        "docker-compose.yml",
        &COMPOSE.replace("build: .", "build: {context: ., target: app}"),
    );
    stack.commit("three stages");
    let push = stack.push("alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    assert!(
        push.output
            .contains(&format!("app-stage-ran-{}", stack.project)),
        "{}",
        push.output
    );
    for skipped in ["unused-stage-ran", "later-stage-ran"] {
        assert!(!push.output.contains(skipped), "{}", push.output);
    }
}

#[test]
fn a_build_secret_reaches_run_and_nothing_else() {
    let stack = stack("bksecret");
    let token = format!("tok-{}-private-index", stack.project);
    std::fs::write(stack.root.join("code/.secrets/index_token"), &token).unwrap();
    stack.write(
        "docker-compose.yml",
        &(COMPOSE.replace(
            "build: .",
            "build: {context: ., secrets: [{source: index, target: index_token}]}",
        ) + "secrets:\n  index: {file: ./.secrets/index_token}\n"),
    );
    // The step prints the secret (the log must show `***`) and a digest of it, which proves
    // the value arrived without showing it.
    stack.write(
        "Dockerfile",
        "FROM debian:bookworm-slim\nRUN --mount=type=secret,id=index_token,required cat /run/secrets/index_token; echo; sha256sum /run/secrets/index_token\nCMD [\"sleep\", \"infinity\"]\n",
    );
    let sha = stack.commit("a build secret");
    let push = stack.push("alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let digest = sha256_hex(token.as_bytes());
    assert!(
        push.output.contains(&digest),
        "the secret reached `RUN`: {}",
        push.output
    );
    assert!(push.output.contains("***"), "{}", push.output);
    assert!(!push.output.contains(&token), "{}", push.output);
    let log = build_log(&stack);
    assert!(log.contains(&digest) && !log.contains(&token), "{log}");

    let tag = format!("{}-app:{sha}", stack.project);
    block(async {
        let docker = docker().await;
        for layer in docker.image_history(&tag).await.unwrap() {
            assert!(!layer.created_by.contains(&token), "{}", layer.created_by);
        }
        // The saved image: every layer and the config, as one tar.
        let mut export = docker.export_image(&tag);
        let mut saved = Vec::new();
        while let Some(chunk) = export.next().await {
            saved.extend_from_slice(&chunk.unwrap());
        }
        assert!(saved.len() > 1000, "the image was saved");
        assert!(
            !saved.windows(token.len()).any(|w| w == token.as_bytes()),
            "the secret is in a layer of the image"
        );
    });
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn a_broken_dockerfile_names_its_failing_step_and_the_running_version_stays() {
    let stack = stack("bkfail");
    stack.write(
        "Dockerfile",
        "FROM debian:bookworm-slim\nCOPY VERSION /VERSION\nCMD [\"sleep\", \"infinity\"]\n",
    );
    let (_, push) = stack.push_version("v1", "alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let running = stack.container_ids();

    // A syntax error.
    stack.write(
        "Dockerfile",
        "FROM debian:bookworm-slim\nCOPY VERSION /VERSION\nRUNN echo typo\n",
    );
    let (_, push) = stack.push_version("v2", "bob");
    assert!(!push.output.contains("deployed"), "{}", push.output);
    assert!(
        push.output.contains(
            "the Dockerfile `Dockerfile` is invalid: dockerfile parse error line 3: unknown instruction: RUNN"
        ),
        "{}",
        push.output
    );
    assert_eq!(stack.container_ids(), running, "the running version stays");

    // A `RUN` that fails: the step, why, and its last lines.
    stack.write(
        "Dockerfile",
        &format!(
            "FROM debian:bookworm-slim\nCOPY VERSION /VERSION\nRUN echo last-words-{} && exit 7\n",
            stack.project
        ),
    );
    let (_, push) = stack.push_version("v3", "bob");
    let step = format!("[3/3] RUN echo last-words-{} && exit 7", stack.project);
    assert!(
        push.output
            .contains(&format!("the step `{step}` failed: exit code: 7")),
        "{}",
        push.output
    );
    let log = build_log(&stack);
    assert!(
        log.contains(&format!("the step `{step}` failed; its last lines:"))
            && log.contains(&format!("|   | last-words-{}", stack.project)),
        "{log}"
    );
    assert_eq!(stack.container_ids(), running, "the running version stays");
    let history = stack.history();
    assert_eq!(history[0]["status"], "failed");
    assert_eq!(history[2]["status"], "succeeded");
}

#[test]
fn a_small_build_cache_limit_makes_the_next_deploy_prune_down_to_it() {
    let _one_at_a_time = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let stack = stack("bkprune");
    // A cache mount of 4 MiB whose target names this project, so its record is told apart
    // from every other test's.
    let target = format!("/cache-{}", stack.project);
    stack.write(
        "Dockerfile",
        &format!(
            "FROM debian:bookworm-slim\nRUN --mount=type=cache,target={target} head -c 4194304 /dev/urandom > {target}/blob\nCMD [\"sleep\", \"infinity\"]\n"
        ),
    );
    stack.commit("fill a cache mount");
    let push = stack.push("alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    // The cache mount's own record (the image's layers are records too, shared with it).
    let mount = format!("cached mount {target} ");
    assert!(
        !cache_records(&mount).is_empty(),
        "the build left its cache mount"
    );

    stack.add_setting("build_cache: 1MiB");
    stack.commit("nothing new");
    let push = stack.push("alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    assert!(
        push.output.contains("build cache: removed"),
        "{}",
        push.output
    );
    assert!(
        cache_records(&mount).is_empty(),
        "the cache mount was pruned: {:?}",
        cache_records(&mount)
    );

    let status = stack.deploy(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["build_cache"]["limit"], 1 << 20, "{status}");
    // `null` only while another disk usage question keeps the engine busy.
    let size = &status["build_cache"]["size"];
    assert!(size.is_u64() || size.is_null(), "{status}");
}

/// The engine's build cache records whose description names `marker`. bollard's models no
/// longer read API 1.41's records, so this asks with curl; the engine answers one disk usage
/// question at a time, so a busy answer is asked again (for 60 s at most).
fn cache_records(marker: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let df = loop {
        let out = run(std::process::Command::new("curl").args([
            "-s",
            "--unix-socket",
            "/var/run/docker.sock",
            "http://localhost/v1.41/system/df",
        ]));
        let df: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the engine's df");
        if df.get("BuildCache").is_some() {
            break df;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the engine never said what its build cache holds: {df}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    df["BuildCache"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["Description"].as_str())
        .filter(|d| d.contains(marker))
        .map(str::to_owned)
        .collect()
}
