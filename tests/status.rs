//! Issue 15: what `deploy status` says right after a deploy is what runs: the database kept
//! across an app-only push, a healthcheck Docker has not run yet, and a push that changed
//! nothing an image is built from.

mod common;

use common::*;

const COMPOSE: &str = r#"services:
  web:
    build: ./web
    command: [sleep, infinity]
    stop_grace_period: 1s
    healthcheck: {test: [CMD, "true"], interval: 300s}
    depends_on:
      db: {condition: service_healthy}
  db:
    image: debian:bookworm-slim
    command: [sleep, infinity]
    stop_grace_period: 1s
    healthcheck: {test: [CMD, "true"], interval: 300s}
"#;

fn status(stack: &Stack) -> serde_json::Value {
    let out = stack.deploy(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn container<'a>(status: &'a serde_json::Value, service: &str) -> &'a serde_json::Value {
    status["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["service"] == service)
        .unwrap_or_else(|| panic!("no `{service}` container in {status:#}"))
}

#[test]
fn issue15_status_after_a_deploy_tells_what_runs() {
    let stack = Stack::empty("status");
    stack.add_settings("min_free_space: 1GiB\nhealth_timeout: 60s\n");
    stack.write("docker-compose.yml", COMPOSE);
    stack.write(
        "web/Dockerfile",
        "FROM debian:bookworm-slim\nCOPY VERSION /VERSION\n",
    );
    stack.write("web/VERSION", "1\n");
    stack.commit("v1");
    let push = stack.push("alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let db = service_container(&stack.project, "db").id.unwrap();

    // Docker's first healthcheck is five minutes away, but the deploy proved both healthy:
    // status runs the healthcheck itself rather than say `starting`.
    let first = status(&stack);
    assert_eq!(first["version"], deploy_version().as_str(), "{first:#}");
    for service in ["web", "db"] {
        let c = container(&first, service);
        assert_eq!(c["health"], "healthy", "{first:#}");
        assert_eq!(c["health_from"], "deploy", "{first:#}");
    }

    // An app-only change replaces the app and keeps the database container.
    stack.write("web/VERSION", "2\n");
    let sha2 = stack.commit("v2");
    let push = stack.push("alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    assert_eq!(service_container(&stack.project, "db").id.unwrap(), db);
    let second = status(&stack);
    assert_eq!(second["live"]["revision"], sha2.as_str(), "{second:#}");
    assert_eq!(container(&second, "web")["revision"], sha2.as_str());

    // A push that changes nothing the image is built from keeps the app's container: it is
    // live as the new revision, and status says the container is unchanged since the last.
    stack.write("README", "docs only\n");
    stack.write("docker-compose.yml", COMPOSE);
    let sha3 = stack.commit("docs");
    let push = stack.push("alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let third = status(&stack);
    assert_eq!(third["live"]["revision"], sha3.as_str(), "{third:#}");
    assert_eq!(
        container(&third, "web")["revision"],
        sha2.as_str(),
        "{third:#}"
    );
    let out = text(&stack.deploy(&["status"]));
    let short = &sha2[..12];
    assert!(
        out.contains(&format!("unchanged since {short}")),
        "the labels and status agree: {out}"
    );
}
