//! Stopping a deploy part-way. `deploy cancel` writes who asked into the deploy's ledger row
//! and signals its process (SIGUSR1, to the hook's own process or to the daemon); `listen`
//! reads the request there and trips the deploy's `Cancel`, which the stages race their
//! waits against. What the deploy changed is then undone as on any failure.

use std::future::Future;

use tokio::sync::watch;

use crate::ids::DeploymentId;
use crate::ledger::Ledger;

/// The signal `deploy cancel` sends. Its default action ends a process, so a deploy listens
/// for it before its row exists (`Signals::register`), and `deploy cancel` only signals a
/// process that runs this binary.
pub(crate) const SIGNAL: nix::sys::signal::Signal = nix::sys::signal::Signal::SIGUSR1;

/// A deploy's side: whether, and by whom, it was canceled.
#[derive(Clone, Debug)]
pub(crate) struct Cancel {
    by: watch::Receiver<Option<String>>,
}

/// Why a deploy stopped early.
#[derive(Debug, thiserror::Error)]
#[error("canceled by {by}")]
pub(crate) struct Canceled {
    pub(crate) by: String,
}

impl Cancel {
    /// One that trips when `trip` is sent a name.
    pub(crate) fn new() -> (watch::Sender<Option<String>>, Self) {
        let (trip, by) = watch::channel(None);
        (trip, Self { by })
    }

    /// One that never trips.
    #[cfg(test)]
    pub(crate) fn never() -> Self {
        Self::new().1
    }

    /// An error if the deploy was canceled: the check between stages.
    pub(crate) fn check(&self) -> Result<(), Canceled> {
        match self.by.borrow().clone() {
            Some(by) => Err(Canceled { by }),
            None => Ok(()),
        }
    }

    /// Waits until the deploy is canceled (for ever, if it never is).
    pub(crate) async fn requested(&self) -> Canceled {
        let mut by = self.by.clone();
        let asked = by
            .wait_for(Option::is_some)
            .await
            .ok()
            .map(|name| name.clone());
        match asked {
            Some(by) => Canceled {
                by: by.unwrap_or_default(),
            },
            None => std::future::pending().await,
        }
    }

    /// Runs `work` unless the deploy is canceled first; then `work` is dropped where it
    /// stands, so only waits whose dropping leaves nothing behind go through here.
    pub(crate) async fn guard<T, E>(
        &self,
        work: impl Future<Output = Result<T, E>>,
    ) -> anyhow::Result<T>
    where
        E: Into<anyhow::Error>,
    {
        tokio::select! {
            done = work => done.map_err(Into::into),
            canceled = self.requested() => Err(canceled.into()),
        }
    }
}

/// `deploy cancel`'s signal, registered before the deploy's ledger row exists: from then on
/// the process survives it.
pub(crate) struct Signals(tokio::signal::unix::Signal);

impl Signals {
    pub(crate) fn register() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        // Tokio keeps the handler installed for the life of the process once registered.
        signal(SignalKind::user_defined1())
            .map(Self)
            .map_err(|e| anyhow::anyhow!("failed to listen for `deploy cancel`: {e}"))
    }

    /// Waits for the next signal; `false` once none can come.
    pub(crate) async fn next(&mut self) -> bool {
        self.0.recv().await.is_some()
    }

    /// Listens on behalf of the deploy `id`, whose row is in `ledger`. Each signal re-reads
    /// the row, so a signal meant for another deploy is harmless. Listening ends when the
    /// returned guard is dropped.
    pub(crate) fn listen(mut self, ledger: Ledger, id: DeploymentId) -> (Cancel, Listening) {
        let (trip, cancel) = Cancel::new();
        let task = tokio::spawn(async move {
            while self.next().await {
                match ledger.cancel_requested(id).await {
                    Ok(Some(by)) => {
                        let _ = trip.send(Some(by));
                        return;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "failed to read a cancel request"),
                }
            }
        });
        (cancel, Listening(task))
    }
}

/// Stops listening when dropped.
pub(crate) struct Listening(tokio::task::JoinHandle<()>);

impl Listening {
    pub(crate) fn new(task: tokio::task::JoinHandle<()>) -> Self {
        Self(task)
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whether `pid` is a live process of this program: a row's pid may since have been given
/// to another process, which `deploy cancel`'s signal would kill.
pub(crate) fn runs_deploy(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| comm.trim() == "deploy")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_trip_ends_the_guarded_wait_and_fails_every_later_check() {
        let (trip, cancel) = Cancel::new();
        assert!(cancel.check().is_ok());
        let waiting = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                cancel
                    .guard(std::future::pending::<anyhow::Result<()>>())
                    .await
            })
        };
        trip.send(Some("olga".to_owned())).unwrap();
        let error = waiting.await.unwrap().unwrap_err();
        assert_eq!(error.to_string(), "canceled by olga");
        assert_eq!(cancel.check().unwrap_err().by, "olga");
    }

    #[tokio::test]
    async fn work_that_ends_first_is_not_canceled() {
        let cancel = Cancel::never();
        let done = cancel.guard(async { anyhow::Ok(7) }).await.unwrap();
        assert_eq!(done, 7);
        assert!(cancel.check().is_ok());
    }
}
