//! Issue #17, findings 15–17: what a client of `deploy serve` can cost it is bounded (the
//! control socket's request lines and connections, the proxy's descriptors), and who a deploy
//! is recorded under is decided by the socket's peer, not by what the peer claims.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::daemon::{ready_lines, serve_log, wait_ready};
use common::*;

/// A running `deploy serve`, stopped when dropped.
struct Daemon {
    child: Child,
}

impl Daemon {
    /// Starts the daemon, with its descriptor limit (soft and hard) set to `nofile` if given.
    fn start(stack: &Stack, nofile: Option<u64>) -> Self {
        let starts = ready_lines(stack) + 1;
        let log = std::fs::File::create(stderr_path(stack)).unwrap();
        let mut command = Command::new(DEPLOY);
        command
            .args(["serve", "--root"])
            .arg(&stack.root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(nofile) = nofile {
            // SAFETY: setrlimit is async-signal-safe, and nothing else runs in the child.
            unsafe {
                command.pre_exec(move || {
                    use nix::sys::resource::{Resource, setrlimit};
                    setrlimit(Resource::RLIMIT_NOFILE, nofile, nofile).map_err(Into::into)
                });
            }
        }
        let daemon = Self {
            child: command.spawn().unwrap(),
        };
        wait_ready(stack, starts);
        daemon
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `/proc/<pid>/status` figure in KiB (`VmHWM`, `VmRSS`).
    fn memory_kib(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no {key} in {status}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stderr_path(stack: &Stack) -> PathBuf {
    stack.base.path().join("serve.stderr")
}

fn socket(stack: &Stack) -> PathBuf {
    stack.root.join("deploy.sock")
}

/// A one-service stack that builds in seconds: the page says `version: <v>`, served by
/// Python's threaded `http.server` on a host port the daemon's proxy owns.
fn light_stack(prefix: &str) -> Stack {
    let stack = Stack::empty(prefix);
    std::fs::write(
        stack.root.join("host.env"),
        format!("WEB_PORT={}\n", stack.port),
    )
    .unwrap();
    stack.add_settings("env_file: host.env\nhealth_timeout: 60s\nmin_free_space: 1GiB\n");
    stack.write(
        "Dockerfile",
        "FROM python:3.11-slim\nCOPY index.html /srv/\n\
         CMD [\"python\", \"-m\", \"http.server\", \"80\", \"-d\", \"/srv\"]\n",
    );
    stack.write(
        "docker-compose.yml",
        "services:\n  web:\n    build: .\n    ports:\n      - \"${WEB_PORT}:80\"\n    \
         stop_grace_period: 1s\n",
    );
    stack.write("index.html", "version: v1\n");
    stack
}

/// Pushes what is committed as `user`; expects the daemon to deploy it.
fn push_and_wait(stack: &Stack, user: &str) -> String {
    let sha = stack.commit("v1");
    let push = stack.push(user);
    assert!(push.output.contains("deployed"), "{}", push.output);
    stack.wait_for_page("version: v1", Duration::from_secs(30));
    sha
}

/// The first line the control socket sends back on a fresh connection, within `within`.
fn first_reply(stack: &Stack, within: Duration) -> std::io::Result<String> {
    let stream = UnixStream::connect(socket(stack))?;
    stream.set_read_timeout(Some(within))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    Ok(line)
}

#[test]
fn issue17_f15_an_endless_line_on_the_socket_does_not_grow_the_daemon() {
    let stack = light_stack("line");
    let daemon = Daemon::start(&stack, None);
    let before = daemon.memory_kib("VmHWM");

    // 200 MiB without a newline, in 1 MiB writes, until the daemon hangs up.
    let mut stream = UnixStream::connect(socket(&stack)).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let started = Instant::now();
    let mut sent = 0_usize;
    for _ in 0..200 {
        if stream.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    assert!(started.elapsed() < Duration::from_secs(60));
    let mut reply = String::new();
    let read = BufReader::new(&stream).read_line(&mut reply);
    assert!(
        read.is_ok() && reply.contains("the request is longer than 64 KiB"),
        "an error reply, then the end: {read:?} {reply:?} after {sent} bytes"
    );
    assert!(
        sent < 100 << 20,
        "the daemon kept reading: {sent} bytes taken"
    );
    let grew = daemon.memory_kib("VmHWM").saturating_sub(before);
    assert!(
        grew < 32 * 1024,
        "the daemon's peak memory grew by {grew} KiB"
    );

    // The socket still serves: the push is handed to the daemon and deployed there.
    push_and_wait(&stack, "alice");
    let row = &stack.history()[0];
    assert_eq!(
        (&row["pid"], &row["status"], &row["user"], &row["uid"]),
        (
            &daemon.pid().into(),
            &"succeeded".into(),
            &"alice".into(),
            &0.into()
        ),
        "{row}"
    );
}

#[test]
fn issue17_f16_idle_floods_do_not_exhaust_the_daemon() {
    // A low limit, so the flood can be larger than it: (1024 - the reserve) / 2 = 256
    // proxied connections at once.
    const NOFILE: u64 = 1024;
    let stack = light_stack("flood");
    let daemon = Daemon::start(&stack, Some(NOFILE));
    let sha = push_and_wait(&stack, "alice");

    // More idle connections to the proxied port than the daemon has descriptors, and more to
    // the control socket than its caps.
    let addr = ([127, 0, 0, 1], stack.port).into();
    let mut flood: Vec<TcpStream> = Vec::new();
    for _ in 0..1000 {
        flood.push(TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap());
    }
    let control: Vec<UnixStream> = (0..100)
        .map(|_| UnixStream::connect(socket(&stack)).unwrap())
        .collect();

    // Past the proxy's sniff timeout (2 s), when silent connections become tunnels, the
    // control socket still answers at once (here: that this uid has too many connections),
    // and the daemon keeps its reserve of descriptors.
    let watch = Instant::now();
    let mut most = 0;
    while watch.elapsed() < Duration::from_secs(5) {
        let reply = first_reply(&stack, Duration::from_secs(3));
        assert!(
            reply
                .as_ref()
                .is_ok_and(|r| r.contains("too many connections")),
            "the control socket must answer during the flood: {reply:?}"
        );
        most = most.max(daemon.open_descriptors());
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(
        most as u64 <= NOFILE - 64,
        "the flood took the daemon to {most} of {NOFILE} descriptors"
    );

    // `deploy` itself says why, as it says why a deploy failed.
    let out = stack.deploy(&["--revision", &sha]);
    assert!(
        !out.status.success()
            && text(&out).contains("too many connections to `deploy serve` from uid 0"),
        "{}",
        text(&out)
    );

    drop(flood);
    drop(control);
    stack.wait_for_page("version: v1", Duration::from_secs(30));
    let out = stack.deploy(&["--revision", &sha]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        stack.history()[0]["pid"],
        daemon.pid(),
        "deployed by the daemon"
    );

    let logged =
        serve_log(&stack).len() as u64 + std::fs::metadata(stderr_path(&stack)).unwrap().len();
    assert!(
        logged < 256 * 1024,
        "the daemon logged {logged} bytes:\n{}",
        serve_log(&stack)
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A system user made for one test, removed (with its group) when dropped.
struct TempUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TempUser {
    fn create() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "tdeploy{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let out = run(Command::new("useradd").args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            &name,
        ]));
        assert!(out.status.success(), "useradd failed: {}", text(&out));
        let id = |flag: &str| -> u32 {
            let out = run(Command::new("id").args([flag, &name]));
            String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        Self { name, uid, gid }
    }

    /// Runs `command` as this user, in its own group only.
    fn run(&self, command: &mut Command) -> Output {
        run(command.uid(self.uid).gid(self.gid).env("HOME", "/tmp"))
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = run(Command::new("userdel").arg(&self.name));
        let _ = run(Command::new("groupdel").arg(&self.name));
    }
}

/// Lets `user` reach the control socket: through the directories above it, and by the group
/// of `code.git`, which the daemon gives the socket.
fn give_socket_access(stack: &Stack, user: &TempUser) {
    for dir in [stack.base.path(), stack.root.as_path()] {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011)).unwrap();
    }
    nix::unistd::chown(
        &stack.root.join("code.git"),
        None,
        Some(nix::unistd::Gid::from_raw(user.gid)),
    )
    .unwrap();
}

/// What an attacker sends by hand: a rollback to `revision` claimed for `alice-the-admin`,
/// with a dump of `db` to restore when a third argument names one. Prints every reply line.
const RAW_CLIENT: &str = r#"
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
ask = {"Deploy": {"pushed": None, "expression": sys.argv[2],
                  "user": "alice-the-admin", "trigger": "rollback"}}
if len(sys.argv) > 3:
    ask["Deploy"]["restore"] = {"db": sys.argv[3]}
s.sendall((json.dumps(ask) + "\n").encode())
for line in s.makefile():
    print(line, end="")
"#;

fn assert_recorded(stack: &Stack, user: &str, uid: u32) {
    let row = &stack.history()[0];
    assert_eq!(
        (&row["user"], &row["uid"], &row["status"]),
        (&user.into(), &uid.into(), &"succeeded".into()),
        "{row}"
    );
    let log = Path::new(row["log"].as_str().unwrap());
    let name = log.file_name().unwrap().to_str().unwrap();
    assert!(name.ends_with(&format!(" {user}.log")), "{name}");
}

#[test]
fn issue17_f17_a_claimed_name_counts_only_from_root_or_the_repo_owner() {
    let user = TempUser::create();
    let stack = light_stack("who");
    give_socket_access(&stack, &user);
    let _daemon = Daemon::start(&stack, None);
    let sha = push_and_wait(&stack, "alice");

    // A member of the socket's group, neither root nor the owner of `code.git`, claims to be
    // the admin on the socket itself.
    let out = user.run(Command::new("/usr/bin/python3").args([
        "-c",
        RAW_CLIENT,
        socket(&stack).to_str().unwrap(),
        &sha,
    ]));
    let replies = String::from_utf8_lossy(&out.stdout);
    assert!(
        replies
            .lines()
            .last()
            .is_some_and(|l| l.contains(r#""ok":true"#)),
        "{}",
        text(&out)
    );
    assert_recorded(&stack, &user.name, user.uid);
    assert_eq!(stack.history()[0]["trigger"], "rollback");

    // A restore throws data away: the socket refuses it from a mere member of its group.
    let rows = stack.history().len();
    let out = user.run(Command::new("/usr/bin/python3").args([
        "-c",
        RAW_CLIENT,
        socket(&stack).to_str().unwrap(),
        &sha,
        "old.dump",
    ]));
    let replies = String::from_utf8_lossy(&out.stdout);
    assert!(
        replies.contains(r#""ok":false"#)
            && replies.contains("restoring a database is for root and the owner of `code.git`"),
        "{}",
        text(&out)
    );
    assert_eq!(stack.history().len(), rows, "nothing was queued");

    // The same claim through `deploy` itself.
    let out = user.run(
        Command::new(DEPLOY)
            .args(["--revision", &sha, "--root"])
            .arg(&stack.root)
            .env("DEPLOY_USER", "alice-the-admin"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_recorded(&stack, &user.name, user.uid);

    // Root may vouch for others: its claim is kept.
    let out = run(Command::new(DEPLOY)
        .args(["--revision", &sha, "--root"])
        .arg(&stack.root)
        .env("DEPLOY_USER", "alice-the-admin"));
    assert!(out.status.success(), "{}", text(&out));
    assert_recorded(&stack, "alice-the-admin", 0);
}
