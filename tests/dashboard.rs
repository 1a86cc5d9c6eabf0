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
    assert!(
        page.contains(&stack.project) && page.contains("succeeded"),
        "{page}"
    );
    assert!(page.contains("name=viewport"), "usable on a phone");
    let api = get(port, "/api/deploys", &bearer);
    let json: serde_json::Value =
        serde_json::from_str(api.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(json[0]["id"], stack.history()[0]["id"], "{api}");
    let status = get(port, "/api/status", &bearer);
    assert!(
        status.contains("\"live\"") && status.contains("\"containers\""),
        "{status}"
    );

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
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    assert!(get(port, "/", &format!("Cookie: {pair}")).starts_with("HTTP/1.1 200"));

    // A running deploy's log arrives line by line while it runs, then ends.
    stack.write(
        "Dockerfile",
        &web_dockerfile(&format!(
            "RUN for i in 1 2 3 4 5 6; do echo {} step-$i; sleep 1; done\n",
            stack.project
        )),
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
    assert!(
        saw_step_while_running,
        "a build line arrived while the deploy ran"
    );
    assert!(ended, "the stream says when the deploy ended");
    assert!(push.join().unwrap().status.success());
    let log_page = get(port, &format!("/deploys/{id}"), &bearer);
    assert!(log_page.contains("step-6"), "{log_page}");
}

#[test]
fn a_token_file_others_can_read_keeps_the_dashboard_closed() {
    let (stack, port) = with_dashboard("dashboardopen");
    let path = stack.root.join("dashboard.token");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let _daemon = Daemon::start(&stack);
    let log = serve_log(&stack);
    assert!(
        log.contains("the dashboard is not started") && log.contains("may be read by others"),
        "{log}"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens"
    );
}

/// Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`:
/// the browser reads commands on fd 3 and answers on fd 4, here the shell's stdin and stdout).
struct Browser {
    child: std::process::Child,
    input: std::process::ChildStdin,
    messages: std::sync::mpsc::Receiver<serde_json::Value>,
    next: u64,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let command = format!(
            "exec chromium --headless --no-sandbox --disable-gpu --no-first-run --remote-debugging-pipe --user-data-dir={} --window-size=390,1000 about:blank 3<&0 4>&1 1>/dev/null 2>/dev/null",
            profile.path().display()
        );
        let mut child = std::process::Command::new("sh")
            .args(["-c", &command])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("chromium runs (.ci/run installs Debian's package)");
        let input = child.stdin.take().unwrap();
        let mut output = BufReader::new(child.stdout.take().unwrap());
        let (send, messages) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            loop {
                let mut message = Vec::new();
                match output.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                message.pop();
                let Ok(value) = serde_json::from_slice(&message) else {
                    continue;
                };
                if send.send(value).is_err() {
                    return;
                }
            }
        });
        let mut browser = Self {
            child,
            input,
            messages,
            next: 0,
            session: None,
            _profile: profile,
        };
        let targets = browser.call("Target.getTargets", serde_json::json!({}));
        let page = targets["targetInfos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .expect("a page")["targetId"]
            .clone();
        let attached = browser.call(
            "Target.attachToTarget",
            serde_json::json!({"targetId": page, "flatten": true}),
        );
        browser.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
        browser
    }

    /// One command, and its result (a protocol error fails the test).
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next += 1;
        let mut message = serde_json::json!({"id": self.next, "method": method, "params": params});
        if let Some(session) = &self.session {
            message["sessionId"] = session.clone().into();
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.input.write_all(&bytes).unwrap();
        loop {
            let answer = self
                .messages
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no answer to {method}"));
            if answer["id"] == self.next {
                assert!(answer.get("error").is_none(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression in the page (a promise is awaited).
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        let result = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        result["result"]["value"].clone()
    }

    fn open(&mut self, url: &str) {
        self.call("Page.navigate", serde_json::json!({"url": url}));
        self.wait_for("document.readyState === 'complete'");
    }

    /// Waits, bounded, until the expression is true in the page.
    fn wait_for(&mut self, expression: &str) {
        let start = Instant::now();
        while self.eval(expression) != serde_json::Value::Bool(true) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "never true: {expression}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&mut self, path: &std::path::Path) {
        let shot = self.call(
            "Page.captureScreenshot",
            serde_json::json!({"format": "png"}),
        );
        let encoded = shot["data"].as_str().unwrap();
        let mut decode = std::process::Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::fs::File::create(path).unwrap())
            .spawn()
            .unwrap();
        decode
            .stdin
            .take()
            .unwrap()
            .write_all(encoded.as_bytes())
            .unwrap();
        assert!(decode.wait().unwrap().success());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In a real browser: 401 without the token, the login form, the history rows, and a running
/// deploy's log growing on screen. The screenshot stays in the target directory.
#[test]
fn in_a_real_browser_the_login_the_history_and_a_live_log() {
    let (stack, port) = with_dashboard("dashboardweb");
    let _daemon = Daemon::start(&stack);
    stack.write("index.html", "version: v1\n");
    let v1 = stack.commit("v1: the first shop");
    assert!(stack.push("dana").output.contains("deployed"));
    let home = format!("http://127.0.0.1:{port}/");

    let mut browser = Browser::start();
    browser.open(&home);
    assert_eq!(browser.eval("document.title"), "Sign in · deploy");
    assert_eq!(
        browser.eval("fetch('/api/deploys').then(r => r.status)"),
        401
    );
    browser.eval(&format!(
        "document.querySelector('input[name=token]').value = '{}'; document.querySelector('form').submit(); true",
        token(&stack)
    ));
    browser.wait_for("document.getElementById('history') !== null");
    let history = browser.eval("document.getElementById('history').innerText");
    let history = history.as_str().unwrap();
    assert!(
        history.contains(&v1[..12]) && history.contains("succeeded"),
        "{history}"
    );

    // Its own step (the project is in it), so no cache makes it instant.
    stack.write(
        "Dockerfile",
        &web_dockerfile(&format!(
            "RUN for i in $(seq 1 12); do echo {} line-$i; sleep 1; done\n",
            stack.project
        )),
    );
    stack.write("index.html", "version: v2\n");
    stack.commit("v2: a slower build");
    let work = stack.work.clone();
    let push = std::thread::spawn(move || {
        run(std::process::Command::new("git")
            .current_dir(work)
            .args(["push", "-q", "prod", "main"]))
    });
    // The page itself shows the new deploy (it follows the ledger without a reload).
    browser.wait_for("document.querySelector('.running a') !== null");
    browser.eval("document.querySelector('.running a').click(); true");
    browser.wait_for(
        "(document.getElementById('log') || {}).textContent?.includes('line-2') === true",
    );
    let early = browser.eval("document.getElementById('log').textContent");
    let early = early.as_str().unwrap();
    assert!(!early.contains("line-12"), "the page opened early: {early}");
    // The build's last line arrives on the page while the deploy still runs.
    browser.wait_for("document.getElementById('log').textContent.includes('line-12')");
    let running = stack.history()[0].clone();
    assert_eq!(running["status"], "running", "the lines came while it ran");
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    browser.screenshot(&shots.join("dashboard-log.png"));
    assert!(push.join().unwrap().status.success());

    // The page goes back to the list when the deploy ends; the history has both rows.
    browser
        .wait_for("document.querySelector('p.status')?.innerText.startsWith('succeeded') === true");
    browser.open(&home);
    let history = browser.eval("document.getElementById('history').innerText");
    assert_eq!(
        history.as_str().unwrap().matches("succeeded").count(),
        2,
        "{history}"
    );
    browser.screenshot(&shots.join("dashboard.png"));
    assert!(
        std::fs::metadata(shots.join("dashboard.png"))
            .unwrap()
            .len()
            > 1000
    );
}
