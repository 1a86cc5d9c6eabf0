//! `deploy serve` for a test's stack, and a steady load on its published port.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{DEPLOY, Stack, deploy_version, http_get};

/// A running `deploy serve`, stopped when dropped.
pub struct Daemon {
    child: Child,
}

impl Daemon {
    pub fn start(stack: &Stack) -> Self {
        Self::start_with(stack, &[])
    }

    /// Serving hostnames on loopback: HTTP on `http`, HTTPS on `https`, the certificates of
    /// `certs`; `more` flags (other roots) after them.
    pub fn start_hosts(
        stack: &Stack,
        (http, https): (u16, u16),
        certs: &std::path::Path,
        more: &[&str],
    ) -> Self {
        let (http, https) = (format!("127.0.0.1:{http}"), format!("127.0.0.1:{https}"));
        let certs = certs.to_str().unwrap();
        let mut flags = vec!["--http", &http, "--https", &https, "--certs", certs];
        flags.extend(more);
        Self::start_with(stack, &flags)
    }

    /// With `deploy serve`'s flags (`--http ADDR`, …) after `--root ROOT`.
    pub fn start_with(stack: &Stack, flags: &[&str]) -> Self {
        let starts = ready_lines(stack) + 1;
        let log = std::fs::File::create(stack.base.path().join("serve.stderr")).unwrap();
        let child = Command::new(DEPLOY)
            .args(["serve", "--root"])
            .arg(&stack.root)
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let daemon = Self { child };
        wait_ready(stack, starts);
        let version = deploy_version();
        assert!(
            serve_log(stack).contains(&version),
            "the daemon logs its version ({version}) at start: {}",
            serve_log(stack)
        );
        daemon
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How many times a daemon of `stack` said it was ready.
pub fn ready_lines(stack: &Stack) -> usize {
    serve_log(stack).matches("deploy serve is ready").count()
}

/// Waits (at most a minute) until daemons of `stack` said they were ready `starts` times.
pub fn wait_ready(stack: &Stack, starts: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready_lines(stack) < starts {
        assert!(
            Instant::now() < deadline,
            "deploy serve never got ready: {}\n{}",
            serve_log(stack),
            std::fs::read_to_string(stack.base.path().join("serve.stderr")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn serve_log(stack: &Stack) -> String {
    std::fs::read_to_string(stack.root.join("serve.log")).unwrap_or_default()
}

/// A steady stream of requests to the published port from another thread, bounded in count
/// and time, counting what failed.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Load {
    pub fn start(port: u16) -> Self {
        let (stop, ok, failed) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut errors = Vec::new();
            for _ in 0..50_000 {
                if s.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(900) {
                    break;
                }
                match http_get(port, "/") {
                    Some(_) => o.fetch_add(1, Ordering::SeqCst),
                    None => {
                        errors.push(format!("{:?}", started.elapsed()));
                        f.fetch_add(1, Ordering::SeqCst)
                    }
                };
                std::thread::sleep(Duration::from_millis(20));
            }
            errors
        });
        Self {
            stop,
            ok,
            failed,
            handle: Some(handle),
        }
    }

    /// Stops the stream; returns (succeeded, failed, when the failures happened).
    pub fn finish(mut self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self.handle.take().unwrap().join().unwrap();
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            errors,
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
