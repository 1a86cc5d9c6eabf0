//! Autoheal: a container of the stack that Docker marks `unhealthy` is restarted, with a
//! back-off so that a container that never recovers is not restarted in a storm.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use futures_util::StreamExt;

use crate::docker::{self, Docker, events::Unhealthy};
use crate::ids::ProjectName;

/// The first wait between two restarts of one container; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container healthy this long after its last restart starts over at `FIRST_BACKOFF`.
const CALM: Duration = Duration::from_secs(600);

/// Watches the engine's events for the project's health changes, forever (reconnecting if
/// the engine restarts).
pub(crate) async fn watch(docker: Docker, project: ProjectName, busy: Arc<AtomicBool>) {
    let healer = Arc::new(Healer {
        docker: docker.clone(),
        busy,
        state: Mutex::new(HashMap::new()),
    });
    loop {
        let mut events = std::pin::pin!(docker::events::unhealthy(&docker, &project));
        while let Some(Unhealthy { id, name }) = events.next().await {
            tracing::warn!(target: "autoheal", container = %name, "container is unhealthy");
            tokio::spawn(healer.clone().heal(id, name));
        }
        tracing::warn!(target: "autoheal", "lost the engine's event stream; reconnecting");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Restart bookkeeping per container id.
struct Healer {
    docker: Docker,
    /// A deploy is running: its health gate judges its own containers meanwhile.
    busy: Arc<AtomicBool>,
    state: Mutex<HashMap<String, Record>>,
}

#[derive(Default)]
struct Record {
    /// When it was last restarted, and the wait owed before the next restart.
    last: Option<(Instant, Duration)>,
    /// A later look is already scheduled.
    recheck: bool,
}

enum Decision {
    Restart,
    /// Look again after this long (a back-off, or a deploy running).
    Later(Duration),
    /// Someone already looks at it later.
    Skip,
}

impl Healer {
    /// Restarts the container as soon as its back-off allows, while it stays unhealthy.
    async fn heal(self: Arc<Self>, id: String, name: String) {
        loop {
            match self.decide(&id).await {
                Decision::Skip => return,
                Decision::Restart => return self.restart(&id, &name).await,
                Decision::Later(wait) => {
                    tracing::info!(target: "autoheal", container = %name, wait_secs = wait.as_secs(), "looking again later (back-off or a deploy running)");
                    tokio::time::sleep(wait).await;
                    self.state
                        .lock()
                        .await
                        .entry(id.clone())
                        .or_default()
                        .recheck = false;
                    // Health events fire on changes only: one skipped now would never come
                    // again, so the look happens here.
                    if !docker::events::is_unhealthy(&self.docker, &id).await {
                        return;
                    }
                }
            }
        }
    }

    async fn decide(&self, id: &str) -> Decision {
        let now = Instant::now();
        let mut state = self.state.lock().await;
        let record = state.entry(id.to_owned()).or_default();
        if record.recheck {
            return Decision::Skip;
        }
        let owed = record
            .last
            .and_then(|(at, wait)| wait.checked_sub(now.duration_since(at)));
        let wait = match owed {
            Some(left) => left,
            None if self.busy.load(Ordering::SeqCst) => Duration::from_secs(5),
            None => return Decision::Restart,
        };
        record.recheck = true;
        Decision::Later(wait)
    }

    async fn restart(&self, id: &str, name: &str) {
        let now = Instant::now();
        match docker::apply::restart(&self.docker, id, name).await {
            Ok(()) => {
                let mut state = self.state.lock().await;
                let record = state.entry(id.to_owned()).or_default();
                let backoff = match record.last {
                    Some((at, wait)) if now.duration_since(at) < CALM => {
                        (wait * 2).min(MAX_BACKOFF)
                    }
                    _ => FIRST_BACKOFF,
                };
                record.last = Some((now, backoff));
                tracing::warn!(
                    target: "autoheal",
                    container = %name,
                    next_wait_secs = backoff.as_secs(),
                    "autoheal: restarted unhealthy container"
                );
            }
            Err(e) => {
                tracing::warn!(target: "autoheal", container = %name, error = %e, "autoheal: restart failed")
            }
        }
    }
}
