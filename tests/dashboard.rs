//! Issue #13: `deploy serve`'s read-only dashboard, over real HTTP against a real daemon and
//! real pushes: the token, the history, the JSON, and a running deploy's log arriving live.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::daemon::{Daemon, serve_log};
use common::*;

/// A request to the dashboard: the whole answer, head and body.
fn request(port: u16, head: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the dashboard listens");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{head}\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

fn get(port: u16, path: &str, auth: &str) -> String {
    request(port, &format!("GET {path} HTTP/1.1\r\n{auth}"), "")
}

fn token(stack: &Stack) -> String {
    std::fs::read_to_string(stack.root.join("dashboard.token"))
        .unwrap()
        .trim()
        .to_owned()
}

fn with_dashboard(prefix: &str) -> (Stack, u16) {
    let stack = Stack::web(prefix);
    let port = free_port();
    stack.add_settings(&format!("dashboard: {{listen: \"127.0.0.1:{port}\"}}\n"));
    (stack, port)
}

#[test]
fn the_dashboard_shows_history_to_the_token_holder_and_streams_a_running_log() {
    let (stack, port) = with_dashboard("dashboard");
    let _daemon = Daemon::start(&stack);
    stack.write("index.html", "version: v1\n");
    stack.commit("v1");
    assert!(stack.push("dana").output.contains("deployed"));
    let bearer = format!("Authorization: Bearer {}", token(&stack));

    // Without the token: 401 and the login form, nothing of the project.
    let refused = get(port, "/", "X-Nothing: 1");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(refused.contains("name=token") && !refused.contains(&stack.project));
    let refused = get(port, "/api/deploys", "Authorization: Bearer not-the-token");
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");

    // With it: the history, and the same rows as JSON as `deploy history --json`.
    let page = get(port, "/", &bearer);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains(&stack.project) && page.contains("succeeded"), "{page}");
    assert!(page.contains("name=viewport"), "usable on a phone");
    let api = get(port, "/api/deploys", &bearer);
    let json: serde_json::Value =
        serde_json::from_str(api.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json[0]["id"], stack.history()[0]["id"], "{api}");
    let status = get(port, "/api/status", &bearer);
    assert!(status.contains("\"live\"") && status.contains("\"containers\""), "{status}");

    // The login form sets an HttpOnly, SameSite cookie that opens the page.
    let login = request(
        port,
        "POST /login HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded",
        &format!("token={}", token(&stack)),
    );
    assert!(login.starts_with("HTTP/1.1 303"), "{login}");
    let cookie = login
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a cookie")
        .to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().unwrap();
    assert!(get(port, "/", &format!("Cookie: {pair}")).starts_with("HTTP/1.1 200"));

    // A running deploy's log arrives line by line while it runs, then ends.
    stack.write(
        "Dockerfile",
        &web_dockerfile("RUN for i in 1 2 3 4 5 6; do echo step-$i; sleep 1; done\n"),
    );
    stack.write("index.html", "version: v2\n");
    stack.commit("v2");
    let work = stack.work.clone();
    let push = std::thread::spawn(move || {
        run(std::process::Command::new("git")
            .current_dir(work)
            .args(["push", "-q", "prod", "main"]))
    });
    let start = Instant::now();
    let id = loop {
        let running = stack.history()[0].clone();
        if running["status"] == "running" {
            break running["id"].as_i64().unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{running}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        stream,
        "GET /deploys/{id}/stream HTTP/1.1\r\nHost: localhost\r\n{bearer}\r\n\r\n"
    )
    .unwrap();
    let mut lines = BufReader::new(stream).lines();
    let mut saw_step_while_running = false;
    let mut ended = false;
    for line in lines.by_ref().take(5000) {
        let Ok(line) = line else { break };
        if line.contains("step-") && !saw_step_while_running {
            saw_step_while_running = stack
                .history()
                .iter()
                .any(|r| r["id"] == id && r["status"] == "running");
        }
        if line == "event: end" {
            ended = true;
            break;
        }
    }
    assert!(saw_step_while_running, "a build line arrived while the deploy ran");
    assert!(ended, "the stream says when the deploy ended");
    assert!(push.join().unwrap().status.success());
    let log_page = get(port, &format!("/deploys/{id}"), &bearer);
    assert!(log_page.contains("step-6"), "{log_page}");
}

#[test]
fn a_token_file_others_can_read_keeps_the_dashboard_closed() {
    let (stack, port) = with_dashboard("dashboardopen");
    let path = stack.root.join("dashboard.token");
    std::fs::set_permissions(
        &path,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let _daemon = Daemon::start(&stack);
    let log = serve_log(&stack);
    assert!(
        log.contains("the dashboard is not started") && log.contains("may be read by others"),
        "{log}"
    );
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens");
}
