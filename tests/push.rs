//! Issue #2: `git push` deploys the app and its PostgreSQL stack; rollback with
//! `deploy --revision`; a failed build leaves the previous version serving.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;

#[test]
fn push_deploys_the_stack_and_rolls_back() {
    let stack = Stack::new("push");

    // First push, by alice.
    let (sha1, push) = stack.push_version("v1", "alice");
    assert!(
        push.output.contains("remote:"),
        "the pusher sees the deploy: {}",
        push.output
    );
    assert!(
        push.output.contains("build server"),
        "the build step shows: {}",
        push.output
    );
    assert!(push.output.contains("deployed"), "{}", push.output);
    let page = stack.wait_for_page("version: v1", Duration::from_secs(10));
    let visits1 = visits(&page);

    // <image>:<sha> and :latest are the same image.
    let repo = format!("{}-server", stack.project);
    let by_sha = image_id(&format!("{repo}:{sha1}")).expect("image tagged with the full sha");
    assert_eq!(Some(by_sha.clone()), image_id(&format!("{repo}:latest")));

    // The database publishes nothing on the host.
    let db = service_container(&stack.project, "db");
    assert!(
        db.ports
            .unwrap_or_default()
            .iter()
            .all(|p| p.public_port.is_none()),
        "the database port must not be published"
    );

    // Second push, by bob: the new version serves and the rows are still there.
    let (sha2, push) = stack.push_version("v2", "bob");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let page = stack.wait_for_page("version: v2", Duration::from_secs(10));
    assert!(visits(&page) > visits1, "rows kept across deploys: {page}");

    // Two build logs, named by date, time, full sha and user.
    let logs = stack.logs();
    assert_eq!(logs.len(), 2, "{logs:?}");
    assert_log_name(&logs[0], &sha1, "alice");
    assert_log_name(&logs[1], &sha2, "bob");
    let latest = std::fs::read_link(stack.root.join("build-logs/latest")).unwrap();
    assert_eq!(latest.to_string_lossy(), logs[1]);

    // history --json lists both, newest first.
    let history = stack.history();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0]["revision"], sha2.as_str());
    assert_eq!(history[0]["user"], "bob");
    assert_eq!(history[0]["status"], "succeeded");
    assert_eq!(history[1]["revision"], sha1.as_str());
    for row in &history {
        for key in [
            "revision",
            "user",
            "status",
            "started_at",
            "finished_at",
            "log",
        ] {
            assert!(!row[key].is_null(), "history lacks `{key}`: {row}");
        }
    }

    // The password is in no image layer and no log.
    assert_secret_nowhere(&stack, &repo, &sha2, &push.output);

    // Rollback to the first revision by its short sha: no rebuild, same image.
    let out = stack.deploy(&["--revision", &sha1[..10]]);
    let said = text(&out);
    assert!(out.status.success(), "rollback failed: {said}");
    assert!(
        !said.contains("build server"),
        "rollback must reuse the image: {said}"
    );
    assert!(
        said.contains("not rolled back"),
        "rollback warns about the schema: {said}"
    );
    let page = stack.wait_for_page("version: v1", Duration::from_secs(10));
    assert!(visits(&page) > visits1, "rollback keeps the rows: {page}");
    assert_eq!(image_id(&format!("{repo}:{sha1}")), Some(by_sha));
    assert_eq!(stack.history()[0]["trigger"], "rollback");

    // A push whose build fails says so, is recorded failed, and v1 keeps serving.
    stack.write("Dockerfile", "FROM python:3.11-slim\nRUN exit 3\n");
    stack.write("VERSION", "v3\n");
    let sha3 = stack.commit("broken build");
    let push = stack.push("carol");
    assert!(push.output.contains("deploy failed"), "{}", push.output);
    assert!(push.output.contains("build"), "{}", push.output);
    let history = stack.history();
    assert_eq!(history[0]["revision"], sha3.as_str());
    assert_eq!(history[0]["status"], "failed");
    assert!(
        history[0]["error"].as_str().unwrap().contains("build"),
        "{}",
        history[0]
    );
    let page = stack.wait_for_page("version: v1", Duration::from_secs(5));
    assert!(visits(&page) > visits1);
}

fn assert_secret_nowhere(stack: &Stack, repo: &str, sha: &str, push_output: &str) {
    assert!(
        !push_output.contains(PASSWORD),
        "password in the pusher's terminal"
    );
    for log in stack.logs() {
        let text = std::fs::read_to_string(stack.root.join("build-logs").join(&log)).unwrap();
        assert!(!text.contains(PASSWORD), "password in build log {log}");
    }
    let tag = format!("{repo}:{sha}");
    let running = containers(&stack.project);
    block(async {
        let docker = docker().await;
        for layer in docker.image_history(&tag).await.unwrap() {
            assert!(
                !layer.created_by.contains(PASSWORD),
                "password in an image layer's command"
            );
        }
        let image = docker.inspect_image(&tag).await.unwrap();
        let env = image.config.and_then(|c| c.env).unwrap_or_default();
        assert!(
            env.iter().all(|e| !e.contains(PASSWORD)),
            "password in the image env"
        );
        // The image's whole content, layer by layer.
        let mut export = docker.export_image(&tag);
        let needle = PASSWORD.as_bytes();
        let mut tail: Vec<u8> = Vec::new();
        while let Some(chunk) = export.next().await {
            let chunk = chunk.unwrap();
            tail.extend_from_slice(&chunk);
            assert!(
                !tail.windows(needle.len()).any(|w| w == needle),
                "password inside the image"
            );
            let keep = tail.len().saturating_sub(needle.len());
            tail.drain(..keep);
        }
        for c in running {
            let inspect = docker
                .inspect_container(c.id.as_deref().unwrap(), None)
                .await
                .unwrap();
            let env = inspect.config.and_then(|c| c.env).unwrap_or_default();
            assert!(
                env.iter().all(|e| !e.contains(PASSWORD)),
                "password in a container's env"
            );
            let options = bollard::query_parameters::LogsOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            };
            let mut logs = docker.logs(c.id.as_deref().unwrap(), Some(options));
            while let Some(chunk) = logs.next().await {
                let chunk = chunk.unwrap().to_string();
                assert!(!chunk.contains(PASSWORD), "password in a container's log");
            }
        }
    });
}
