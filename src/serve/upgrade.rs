//! Replacing the running daemon without refusing a connection (SIGHUP, or `deploy serve
//! --upgrade`): the daemon starts the program at its path again (a new binary, if one was
//! installed there), hands it every listening socket (the proxy's, the dashboard's, each
//! root's control socket) as systemd's socket activation would, waits until it says it is
//! ready, then stops accepting and lets its open connections finish.
//!
//! ```text
//! old: SIGHUP ─ control sockets no longer accepted (pushes wait in their backlog)
//!      ─ queued and running deploys finish ─ start new with the sockets ─┐
//! new:                                    restore routes ─ ready ─ byte on the pipe
//! old: ◄──────────────────────────────────────────────────────────────────┘
//!      stops accepting, finishes its requests in flight, exits
//! ```
//!
//! Both accept on the same sockets for a moment, which the kernel shares; a connection is
//! never refused. Under systemd the new process tells it its pid (`MAINPID`), so the
//! service carries on (`Type=notify`, `NotifyAccess=all` in the unit).

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use super::activation::{FIRST, HANDOVER_FDS};

/// Where the successor's "ready" byte goes: a descriptor number.
pub(crate) const READY_FD: &str = "DEPLOY_READY_FD";

/// How long a successor may take to get ready before the upgrade is given up.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts `exe` with this process's arguments and `sockets` as descriptors 3…; returns its
/// pid once it said it is ready. A successor that exits or stays silent is stopped, and the
/// error says so: this daemon then carries on.
pub(crate) async fn start_successor(exe: &Path, sockets: Vec<OwnedFd>) -> anyhow::Result<u32> {
    let (ready_read, ready_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("failed to make a pipe")?;
    let sources: Vec<RawFd> = (sockets.iter().chain([&ready_write]))
        .map(AsRawFd::as_raw_fd)
        .collect();
    let count = sockets.len();
    let mut command = Command::new(exe);
    command
        .args(std::env::args_os().skip(1))
        .env(HANDOVER_FDS, count.to_string())
        .env(READY_FD, (FIRST + count as RawFd).to_string())
        .stdin(Stdio::null());
    let mut moved: Vec<RawFd> = vec![-1; sources.len()];
    // SAFETY: between fork and exec the closure only calls `fcntl` and `dup2`, which are
    // async-signal-safe, on descriptors this process owns; `moved` was allocated before.
    unsafe {
        command.pre_exec(move || {
            // Out of the way of the target numbers first, then into place (dup2 leaves the
            // copies without close-on-exec, so they cross `exec`).
            let top = FIRST + sources.len() as RawFd;
            for (slot, fd) in moved.iter_mut().zip(&sources) {
                *slot = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, top);
                if *slot < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in moved.iter().enumerate() {
                if libc::dup2(*fd, FIRST + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("failed to start `{}`", exe.display()))?;
    let pid = child.id();
    drop(ready_write);
    drop(sockets);
    let mut pipe = std::fs::File::from(ready_read);
    let read = tokio::task::spawn_blocking(move || {
        let mut byte = [0u8; 1];
        pipe.read(&mut byte)
    });
    let said = tokio::time::timeout(READY_TIMEOUT, read).await;
    match said {
        Ok(Ok(Ok(1))) => {
            // Reaped by nobody here: the successor is the daemon now.
            std::mem::forget(child);
            Ok(pid)
        }
        outcome => {
            let _ = child.kill();
            let _ = child.wait();
            match outcome {
                Err(_) => bail!(
                    "the new daemon (pid {pid}) was not ready within {}s; stopped it",
                    READY_TIMEOUT.as_secs()
                ),
                _ => bail!("the new daemon (pid {pid}) ended before it was ready; see its log"),
            }
        }
    }
}

/// Tells whoever waits that this daemon is ready: its predecessor (the pipe), systemd
/// (`READY=1`, and this process as the service's main one), and `ROOT/serve.pid` of each
/// root, which `deploy serve --upgrade` reads.
pub(crate) fn announce_ready(ready: Option<OwnedFd>, roots: &[PathBuf]) {
    let pid = std::process::id();
    for root in roots {
        if let Err(error) = std::fs::write(root.join("serve.pid"), format!("{pid}\n")) {
            tracing::warn!(root = %root.display(), %error, "failed to write serve.pid");
        }
    }
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::MainPid(pid),
        sd_notify::NotifyState::Ready,
    ]);
    if let Some(fd) = ready {
        use std::io::Write;
        let _ = std::fs::File::from(fd).write_all(b"1");
    }
}

/// Where a failed upgrade says why, for `deploy serve --upgrade` waiting on it.
fn failure_file(root: &Path) -> PathBuf {
    root.join("serve.upgrade-failed")
}

/// Tells `deploy serve --upgrade` the upgrade failed and this daemon carries on.
pub(crate) fn failed(roots: &[PathBuf], error: &anyhow::Error) {
    for root in roots {
        let _ = std::fs::write(failure_file(root), format!("{error:#}\n"));
    }
}

/// The descriptor a predecessor waits on, named by `READY_FD`; read once, at start.
pub(crate) fn ready_fd() -> Option<OwnedFd> {
    let fd: RawFd = std::env::var(READY_FD).ok()?.parse().ok()?;
    // SAFETY (of the environment call): at start, before any other thread reads it.
    unsafe { std::env::remove_var(READY_FD) };
    // SAFETY: the predecessor passed this descriptor to us for this purpose alone; it is
    // checked to be open before it is owned.
    nix::fcntl::fcntl(
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .ok()?;
    let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let _ = nix::fcntl::fcntl(
        &owned,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    Some(owned)
}

/// `deploy serve --upgrade`: asks the daemon that serves `root` to replace itself, and waits
/// until it has. Returns the old and the new pid.
pub(crate) fn request(root: &Path) -> anyhow::Result<(u32, u32)> {
    let pid_file = root.join("serve.pid");
    let read_pid =
        || -> Option<u32> { std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok() };
    // A `deploy` process that has not ended (a zombie waits for its parent, but is gone).
    let is_deploy = |pid: u32| {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
        comm.is_ok_and(|comm| comm.trim() == "deploy") && state != Some(Some('Z'))
    };
    let Some(old) = read_pid().filter(|pid| is_deploy(*pid)) else {
        bail!(
            "no `deploy serve` runs for `{}` (no live pid in `{}`)",
            root.display(),
            pid_file.display()
        );
    };
    let failure = failure_file(root);
    let _ = std::fs::remove_file(&failure);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .with_context(|| format!("failed to signal `deploy serve` (pid {old})"))?;
    // The old daemon first finishes the deploys it runs and has queued.
    let deadline = std::time::Instant::now() + Duration::from_secs(3600);
    while is_deploy(old) {
        if let Ok(why) = std::fs::read_to_string(&failure) {
            let _ = std::fs::remove_file(&failure);
            bail!("the upgrade failed and pid {old} serves on: {}", why.trim());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "`deploy serve` (pid {old}) has not handed over after an hour; see `ROOT/serve.log`"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match read_pid().filter(|pid| *pid != old && is_deploy(*pid)) {
        Some(new) => Ok((old, new)),
        None => bail!(
            "`deploy serve` (pid {old}) ended, and no new daemon took over; see `ROOT/serve.log`"
        ),
    }
}
