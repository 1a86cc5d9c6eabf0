//! The ROOT lock: one deploy at a time, released by the kernel when its holder dies.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;

use crate::report::Reporter;

/// Held for the whole deploy; dropping it (or the process dying, even by SIGKILL) releases
/// it, so no lock is ever left for someone to remove by hand.
pub(crate) struct Lock {
    file: File,
}

/// Takes the lock at `path`. If another deploy holds it, says who and what it waits for,
/// then waits.
pub(crate) async fn acquire(
    path: &Path,
    holder: &str,
    reporter: &Reporter,
) -> anyhow::Result<Lock> {
    let mut file = open(path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut current = String::new();
            let _ = file.read_to_string(&mut current);
            let current = current.trim();
            let who = if current.is_empty() {
                "another deploy"
            } else {
                current
            };
            reporter.info(format!("waiting for {who} to finish"));
            // A thread of its own, not the runtime's blocking pool: a wait given up (a
            // canceled deploy) must not hold up the runtime's shutdown. If nobody takes the
            // file, it is dropped, and the lock with it.
            let (taken, waited) = tokio::sync::oneshot::channel();
            std::thread::Builder::new()
                .name("lock wait".to_owned())
                .spawn(move || {
                    let _ = taken.send(file.lock().map(|()| file));
                })
                .context("failed to start waiting for the lock")?;
            file = waited
                .await
                .context("the lock wait was interrupted")?
                .with_context(|| format!("failed to lock `{}`", path.display()))?;
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("failed to lock `{}`", path.display()));
        }
    }
    Ok(Lock::held(file, holder))
}

/// Never through a symlink: one planted under this name would have us lock, and write the
/// holder's line into, whatever it points at.
fn open(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("failed to open the lock file `{}`", path.display()))
}

impl Lock {
    /// Tells the next waiter who holds it; a stale text after a crash is harmless because
    /// only the kernel's lock counts.
    fn held(mut file: File, holder: &str) -> Self {
        file.set_len(0).ok();
        file.rewind().ok();
        let _ = writeln!(file, "{holder}");
        Lock { file }
    }
}

/// Takes the lock if nobody holds it: `None` when a deploy runs. For commands that only need
/// the lock to settle what a dead deploy left (`deploy status`, the daemon's start).
pub(crate) fn try_acquire(path: &Path, holder: &str) -> anyhow::Result<Option<Lock>> {
    let file = open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Lock::held(file, holder))),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("failed to lock `{}`", path.display()))
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn second_waits_until_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploy.lock");
        let reporter = Reporter::new();
        let first = acquire(&path, "deploy of abc by alice", &reporter)
            .await
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), "deploy of abc by alice");

        let p2 = path.clone();
        let second =
            tokio::spawn(
                async move { acquire(&p2, "deploy of def by bob", &Reporter::new()).await },
            );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!second.is_finished(), "the second deploy must wait");
        drop(first);
        let _second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap().trim(),
            "deploy of def by bob"
        );
    }
}
