//! Issue #13: notifications. Real pushes, with webhook receivers on loopback and a command;
//! a receiver that fails or hangs changes nothing about the deploy.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// How a receiver answers its n-th request (from 0).
#[derive(Clone, Copy)]
enum Answer {
    Ok,
    /// 500 to the first request, 200 after.
    FailFirst,
    /// Reads the request and never answers.
    Hang,
}

/// One request a receiver got: its signature header and its body.
type Request = (Option<String>, String);

/// A webhook receiver on loopback: every request it got.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let seen = got.clone();
        std::thread::spawn(move || {
            // Bounded: a test makes a handful of requests.
            for (n, stream) in listener.incoming().take(50).enumerate() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut length, mut signature) = (0, None);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if lower.starts_with("x-deploy-signature:") {
                        signature = Some(line.split_once(':').unwrap().1.trim().to_owned());
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                seen.lock()
                    .unwrap()
                    .push((signature, String::from_utf8_lossy(&body).into_owned()));
                let status = match (answer, n) {
                    (Answer::Hang, _) => {
                        // Holds the connection (and the deliverer's attempt) open.
                        std::thread::spawn(move || {
                            std::thread::sleep(Duration::from_secs(60));
                            drop(stream);
                        });
                        continue;
                    }
                    (Answer::FailFirst, 0) => "500 Internal Server Error",
                    _ => "200 OK",
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Self { port, got }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// The events received so far, in order.
    fn events(&self) -> Vec<String> {
        self.bodies()
            .iter()
            .map(|b| b["event"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        let got = self.got.lock().unwrap();
        got.iter()
            .map(|(_, body)| serde_json::from_str(body).unwrap())
            .collect()
    }

    /// Waits, bounded, until `n` requests arrived.
    fn wait_for(&self, n: usize) {
        let start = Instant::now();
        while self.got.lock().unwrap().len() < n {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{} requests arrived, not {n}: {:?}",
                self.got.lock().unwrap().len(),
                self.events()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The signature the receiver would compute: `openssl dgst -sha256 -hmac`.
fn openssl_signature(secret: &str, body: &str) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl computes the expected signature");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256={}", text.trim().rsplit(' ').next().unwrap())
}

#[test]
fn a_webhook_hears_started_then_succeeded_or_failed_signed_and_a_command_hears_failures() {
    let stack = Stack::web("notify");
    let hook = Receiver::start(Answer::Ok);
    let paged = stack.base.path().join("paged.json");
    std::fs::write(stack.root.join("notify.secret"), "s3cret-hmac-key\n").unwrap();
    stack.add_settings(&format!(
        "notify:\n  - url: {}\n    secret_file: notify.secret\n  - command: [sh, -c, 'cat >> {}']\n    events: [failed]\n",
        hook.url(),
        paged.display()
    ));
    stack.write("index.html", "version: v1\n");
    let sha = stack.commit("v1 of the shop");
    let push = stack.push("dana");
    assert!(push.output.contains("deployed"), "{}", push.output);

    hook.wait_for(2);
    assert_eq!(hook.events(), ["started", "succeeded"]);
    let done = &hook.bodies()[1];
    assert_eq!(done["revision"], sha.as_str());
    assert_eq!(done["message"], "v1 of the shop");
    assert_eq!(done["user"], "dana");
    assert_eq!(done["project"], stack.project.as_str());
    assert_eq!(done["environment"], "production");
    assert_eq!(done["deployment_id"], stack.history()[0]["id"]);
    assert!(
        done["finished_at"].is_string() && done["log"].is_string(),
        "{done}"
    );
    for (signature, body) in hook.got.lock().unwrap().iter() {
        assert_eq!(
            signature.as_deref(),
            Some(openssl_signature("s3cret-hmac-key", body).as_str()),
            "{body}"
        );
    }

    // A push that fails: `failed` to the webhook and to the command.
    stack.write("docker-compose.yml", "services: {}\n");
    stack.commit("no services");
    let push = stack.push("dana");
    assert!(!push.output.contains("deployed"), "{}", push.output);
    hook.wait_for(4);
    assert_eq!(hook.events()[2..], ["started", "failed"]);
    assert!(hook.bodies()[3]["error"].is_string());
    let start = Instant::now();
    while !std::fs::read_to_string(&paged).is_ok_and(|t| t.ends_with('}')) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the command never ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let paged: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&paged).unwrap()).unwrap();
    assert_eq!(
        paged["event"], "failed",
        "the command gets only what it asked for"
    );
}

#[test]
fn a_receiver_that_fails_or_hangs_changes_nothing_and_gets_the_retry() {
    let stack = Stack::web("notifyfail");
    let failing = Receiver::start(Answer::FailFirst);
    let hanging = Receiver::start(Answer::Hang);
    stack.add_settings(&format!(
        "notify:\n  - url: {}\n    events: [succeeded]\n  - url: {}\n    events: [succeeded]\n",
        failing.url(),
        hanging.url()
    ));
    stack.write("index.html", "version: v1\n");
    stack.commit("v1");
    let push = stack.push("dana");
    assert!(push.output.contains("deployed"), "{}", push.output);
    assert_eq!(stack.history()[0]["status"], "succeeded");
    stack.wait_for_page("version: v1", Duration::from_secs(10));

    // The 500 is retried; the hanging receiver's attempt times out and is shown.
    failing.wait_for(2);
    assert_eq!(failing.events(), ["succeeded", "succeeded"]);
    hanging.wait_for(1);
    let start = Instant::now();
    let shown = loop {
        let out = stack.deploy(&["status"]);
        let shown = text(&out);
        if shown.contains("notify   the `succeeded` event to") {
            break shown;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{shown}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(shown.contains(&hanging.url()), "{shown}");
    assert!(shown.contains("retrying"), "{shown}");
}

#[test]
fn a_notify_entry_with_neither_url_nor_command_is_refused_by_name() {
    let stack = Stack::empty("notifybad");
    stack.add_settings("notify:\n  - events: [failed]\n");
    let out = stack.deploy(&["status"]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("notify[0]") && said.contains("an entry needs `url` or `command`"),
        "{said}"
    );
}
