//! Issue 19: a deploy killed part-way, by SIGKILL of `deploy serve` or of the hook running it
//! in-process, at three points: during the build, while the new container starts, and
//! between the switch and the removal of the old container. Afterwards the served version,
//! the containers' labels, `deploy status` and `deploy history` agree, and only the live
//! revision's containers are left. Behind the daemon, the test holds the app's port the way
//! systemd's socket unit does (`LISTEN_FDS`): no connection is refused across the kills.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::daemon::wait_ready;
use common::*;

/// `deploy serve`, started the way systemd starts it with a socket unit: the app's port is
/// bound and listened on by the test, which passes it on to each start as descriptor 3.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(stack: &Stack, port: &TcpListener, starts: usize) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stack.base.path().join("serve.stderr"))
            .unwrap();
        let fd = port.as_raw_fd();
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" serve --root "$1""#,
            ])
            .arg(DEPLOY)
            .arg(&stack.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        // SAFETY: dup2 and fcntl are async-signal-safe; they put the listening socket at
        // descriptor 3, without close-on-exec, in the child only (dup2 onto itself would
        // keep the flag, hence fcntl).
        unsafe {
            command.pre_exec(move || {
                let done = if fd == 3 {
                    nix::libc::fcntl(3, nix::libc::F_SETFD, 0)
                } else {
                    nix::libc::dup2(fd, 3)
                };
                if done == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap();
        wait_ready(stack, starts);
        Self { child }
    }

    fn kill(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests to the app's port from another thread, one at a time, bounded in count and
/// time: how many answered, were refused, or failed otherwise.
struct Load {
    stop: Arc<AtomicBool>,
    counts: Arc<[AtomicU64; 3]>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
        let (s, c) = (stop.clone(), counts.clone());
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            for _ in 0..100_000 {
                if s.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(900) {
                    break;
                }
                c[request(port) as usize].fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            counts,
            handle: Some(handle),
        }
    }

    /// (answered, refused, failed otherwise).
    fn finish(mut self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap();
        let n = |i: usize| self.counts[i].load(Ordering::SeqCst);
        (n(0), n(1), n(2))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// 0: answered 200; 1: refused; 2: failed otherwise. A request may wait up to 60 s: while
/// the daemon restarts, connections wait in the socket's queue.
fn request(port: u16) -> u8 {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return 1,
        Err(_) => return 2,
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    if write!(stream, "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").is_err() {
        return 2;
    }
    let mut response = String::new();
    match stream.read_to_string(&mut response) {
        Ok(_) if response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200") => 0,
        _ => 2,
    }
}

/// A `git push prod main` in the background; its output line by line.
fn spawn_push(stack: &Stack) -> (Child, Receiver<String>) {
    let mut child = Command::new("git")
        .current_dir(&stack.work)
        .args(["push", "prod", "main"])
        .env("DEPLOY_USER", "alice")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

fn wait_for_line(lines: &Receiver<String>, marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
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

/// Waits until the app container of `sha` runs (Docker says so), for the kill while it
/// starts.
fn wait_until_running(stack: &Stack, sha: &str) {
    let name = format!("/{}-server-{}", stack.project, &sha[..12]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let running = containers(&stack.project).into_iter().any(|c| {
            c.names.iter().flatten().any(|n| *n == name)
                && c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
        });
        if running {
            return;
        }
        assert!(Instant::now() < deadline, "`{name}` never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The served version, the labels, status and history tell one story: returns the live
/// revision.
fn assert_one_story(stack: &Stack, shas: &[(String, String)], when: &str) -> String {
    let out = stack.deploy(&["status", "--json"]);
    assert!(out.status.success(), "{when}: {}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let live = status["live"]["revision"].as_str().unwrap().to_owned();
    let history = stack.history();
    assert!(
        history.iter().all(|r| r["status"] != "running"),
        "{when}: a row is still running: {history:#?}"
    );
    let servers: Vec<&serde_json::Value> = status["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["service"] == "server")
        .collect();
    assert_eq!(servers.len(), 1, "{when}: one app container: {status:#}");
    assert_eq!(servers[0]["revision"], live.as_str(), "{when}: {status:#}");
    let version = &shas.iter().find(|(sha, _)| *sha == live).unwrap().1;
    let page = stack.get("/").unwrap_or_default();
    assert!(
        page.contains(&format!("version: {version}")),
        "{when}: status says {version} is live, the page says: {page}"
    );
    live
}

/// The app of revisions after the first takes 6 s to listen, so a kill while it starts
/// finds it running but not ready.
fn slow_start(stack: &Stack) {
    let compose = stack.compose().replace(
        "    stop_grace_period: 1s\n",
        "    stop_grace_period: 1s\n    command: [\"sh\", \"-c\", \"sleep 6; exec python /app/app.py\"]\n",
    );
    assert!(compose.contains("sleep 6"), "{compose}");
    stack.write("docker-compose.yml", &compose);
}

#[test]
fn issue19_a_daemon_killed_mid_deploy_comes_back_telling_what_it_serves() {
    let stack = Stack::new("crashd");
    let port = TcpListener::bind(("0.0.0.0", stack.port)).unwrap();
    let mut starts = 1;
    let mut daemon = Daemon::start(&stack, &port, starts);
    let (sha, push) = stack.push_version("v1", "alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let mut shas = vec![(sha, "v1".to_owned())];
    slow_start(&stack);
    let load = Load::start(stack.port);

    // (the version, where to kill, what to wait for after the marker)
    let points = [
        ("v2", "builder: ", "during the build"),
        (
            "v3",
            "-----> replace server",
            "while the new container starts",
        ),
        (
            "v4",
            "traffic on port",
            "between the switch and the removal",
        ),
    ];
    for (version, marker, when) in points {
        stack.write("VERSION", &format!("{version}\n"));
        let sha = stack.commit(version);
        shas.push((sha.clone(), version.to_owned()));
        let (mut push, lines) = spawn_push(&stack);
        wait_for_line(&lines, marker);
        if when.starts_with("while") {
            wait_until_running(&stack, &sha);
        }
        daemon.kill();
        starts += 1;
        daemon = Daemon::start(&stack, &port, starts);
        let _ = push.wait();
        let live = assert_one_story(&stack, &shas, when);
        eprintln!("{when}: {} is live", &live[..12]);
    }
    let (answered, refused, failed) = load.finish();
    eprintln!(
        "across 3 kills of the daemon: {answered} requests answered, {refused} refused, {failed} failed (in flight at a kill)"
    );
    assert_eq!(
        refused, 0,
        "no connection is refused while the port is held"
    );
    assert!(
        failed <= 3,
        "at most the request in flight at each kill fails: {failed}"
    );
    assert!(answered > 50, "the load ran: {answered}");
    drop(daemon);
}

#[test]
fn issue19_a_hook_killed_mid_deploy_leaves_what_status_shows() {
    let stack = Stack::new("crashh");
    let (sha, push) = stack.push_version("v1", "alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let mut shas = vec![(sha, "v1".to_owned())];
    slow_start(&stack);

    let points = [
        ("v2", "builder: ", "during the build"),
        (
            "v3",
            "-----> replace server",
            "while the new container starts",
        ),
        (
            "v4",
            "remove old containers",
            "between the switch and the removal",
        ),
    ];
    for (version, marker, when) in points {
        stack.write("VERSION", &format!("{version}\n"));
        let sha = stack.commit(version);
        shas.push((sha.clone(), version.to_owned()));
        git(
            &stack.work,
            &["push", "-q", "prod", "HEAD:refs/heads/staging"],
        );
        let mut deploy = Command::new(DEPLOY)
            .args(["--revision", &sha, "--root"])
            .arg(&stack.root)
            .env("DEPLOY_USER", "alice")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = deploy.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        wait_for_line(&lines, marker);
        if when.starts_with("while") {
            wait_until_running(&stack, &sha);
        }
        deploy.kill().unwrap(); // SIGKILL
        deploy.wait().unwrap();
        // Right after the kill, with no deploy in between.
        let live = assert_one_story(&stack, &shas, when);
        eprintln!("{when}: {} is live", &live[..12]);
    }
}
