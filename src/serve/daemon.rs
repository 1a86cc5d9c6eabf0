//! `deploy serve`: one daemon per ROOT. It owns the app's published ports through the
//! proxy, runs deploys handed over on `ROOT/deploy.sock` one at a time, restarts unhealthy
//! containers, and picks up where it left off after a restart.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::net::UnixListener;
use tokio::sync::{Notify, mpsc};

use crate::docker::routes::Route;
use crate::docker::{self, Docker};
use crate::ids::ProjectName;
use crate::ledger::Ledger;
use crate::pipeline::traffic::{Switch, Traffic};
use crate::pipeline::{self, Request, Target, record};
use crate::report::{Event, Reporter, Sink};
use crate::root::Root;
use crate::settings::Settings;

use super::protocol::Reply;
use super::proxy::{Proxy, ProxyConfig};
use super::{autoheal, control, descriptors};

/// How long a stopping daemon lets proxied connections finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the daemon until SIGTERM or SIGINT.
pub(crate) async fn run(root: Root) -> anyhow::Result<()> {
    // First, so that everything after it opens under the raised limit.
    let proxy_config = proxy_config();
    let settings = Settings::load(&root)?;
    let project = settings.project(&root)?;
    let docker = docker::connect().await?;
    let listener = bind_socket(&root)?;

    let switch = Arc::new(ProxySwitch {
        proxy: Proxy::new(proxy_config),
        listening: Mutex::new(BTreeSet::new()),
        drain_timeout: settings.drain_timeout,
    });
    restore(&docker, &project, &switch).await?;

    let daemon = Arc::new(Daemon {
        root: root.clone(),
        queue: Mutex::new(VecDeque::new()),
        wake: Notify::new(),
        busy: Arc::new(AtomicBool::new(false)),
        switch: switch.clone(),
    });
    tokio::spawn(autoheal::watch(
        docker.clone(),
        project.clone(),
        daemon.busy.clone(),
    ));
    // The deploy pipeline runs on a thread of its own: its future borrows too much for the
    // compiler to prove it `Send`, and one deploy at a time needs no more than one thread.
    let worker = {
        let daemon = daemon.clone();
        std::thread::Builder::new()
            .name("deploys".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match runtime {
                    Ok(runtime) => runtime.block_on(work(daemon)),
                    Err(e) => tracing::error!(error = %e, "failed to start the deploy worker"),
                }
            })
            .context("failed to start the deploy worker")?
    };
    tracing::info!(root = %root.path().display(), %project, "deploy serve is ready");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("failed to listen for SIGTERM")?;
    tokio::select! {
        () = control::serve(listener, daemon.clone()) => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }

    tracing::info!("stopping: no new deploys; the running one finishes first");
    let _ = std::fs::remove_file(root.socket());
    while daemon.busy.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(worker);
    tracing::info!(stats = %switch.proxy.stats(), "proxy");
    let report = switch.proxy.shutdown(SHUTDOWN_GRACE).await;
    tracing::info!(?report, "deploy serve stopped");
    Ok(())
}

/// The proxy's settings: as many connections as the descriptor limit allows after the
/// reserve (`descriptors`), the limit first raised as far as it goes.
fn proxy_config() -> ProxyConfig {
    let nofile = match descriptors::raise_nofile_limit() {
        Ok(nofile) => nofile,
        Err(error) => {
            tracing::warn!(%error, "failed to read the descriptor limit; assuming 1024");
            1024
        }
    };
    let max_connections = descriptors::proxy_connections(nofile);
    tracing::info!(nofile, max_connections, "descriptor limit");
    ProxyConfig {
        max_connections,
        ..ProxyConfig::default()
    }
}

/// The control socket. Its mode is 0660 with the group of `code.git`, so exactly the users
/// who can push (and root) can connect; a stale socket from a killed daemon is replaced.
fn bind_socket(root: &Root) -> anyhow::Result<UnixListener> {
    let path = root.socket();
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            bail!(
                "another `deploy serve` already runs for `{}`",
                root.path().display()
            );
        }
        std::fs::remove_file(&path)
            .with_context(|| format!("failed to remove the stale socket `{}`", path.display()))?;
    }
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("failed to listen on `{}`", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("failed to restrict `{}`", path.display()))?;
    if let Ok(repo) = std::fs::metadata(root.repo()) {
        let gid = nix::unistd::Gid::from_raw(repo.gid());
        nix::unistd::chown(&path, None, Some(gid)).with_context(|| {
            format!(
                "failed to give `{}` the group of `code.git`",
                path.display()
            )
        })?;
    }
    Ok(listener)
}

/// After a restart: the live containers behind the proxy say, through their labels, which
/// ports to listen on and where to send them. No deploy needed.
async fn restore(
    docker: &Docker,
    project: &ProjectName,
    switch: &ProxySwitch,
) -> anyhow::Result<()> {
    let mut routes = Vec::new();
    for c in docker::observe::containers(docker, project).await? {
        if c.running && !c.name.ends_with(crate::plan::names::PARKED_SUFFIX) {
            routes.extend(docker::routes::of_container(docker, &c.id).await?);
        }
    }
    // Docker lists newest first; when a killed deploy left two containers for one port,
    // the newest (the one the last deploy switched to, or was about to) wins.
    let mut seen = BTreeSet::new();
    routes.retain(|r| seen.insert(r.listen));
    if routes.is_empty() {
        return Ok(());
    }
    for r in &routes {
        tracing::info!(listen = %r.listen, backend = %r.backend, "resuming proxying to the live container");
    }
    switch.route(routes)
}

pub(super) struct Daemon {
    pub(super) root: Root,
    queue: Mutex<VecDeque<Work>>,
    wake: Notify,
    /// A deploy is running: autoheal leaves containers to its health gate meanwhile.
    busy: Arc<AtomicBool>,
    switch: Arc<ProxySwitch>,
}

pub(super) struct Job {
    pub(super) request: Request,
    pub(super) replies: mpsc::UnboundedSender<Reply>,
}

/// What the worker does next.
enum Work {
    Deploy(Job),
    /// A queued push replaced by a newer one of its branch: recorded, not deployed.
    Superseded(Job),
}

impl Daemon {
    /// Queues a deploy. A push replaces any queued (not yet running) push of the same branch:
    /// deploying the older one first would only delay the newer.
    pub(super) async fn enqueue(&self, job: Job) {
        {
            let mut queue = self.queue.lock().expect("queue lock");
            if let Target::Pushed { refname, .. } = &job.request.target {
                let same = |w: &Work| matches!(w, Work::Deploy(q) if matches!(&q.request.target, Target::Pushed { refname: r, .. } if r == refname));
                let (older, rest): (VecDeque<Work>, VecDeque<Work>) =
                    queue.drain(..).partition(same);
                *queue = rest;
                for w in older {
                    if let Work::Deploy(old) = w {
                        queue.push_front(Work::Superseded(old));
                    }
                }
            }
            let ahead = queue
                .iter()
                .filter(|w| matches!(w, Work::Deploy(_)))
                .count()
                + usize::from(self.busy.load(Ordering::SeqCst));
            let _ = job.replies.send(Reply::Queued { ahead });
            queue.push_back(Work::Deploy(job));
        }
        self.wake.notify_one();
    }

    fn next(&self) -> Option<Work> {
        self.queue.lock().expect("queue lock").pop_front()
    }
}

async fn record_superseded(root: &Root, job: Job) {
    let Target::Pushed { revision, .. } = &job.request.target else {
        return;
    };
    let recorded = async {
        let ledger = Ledger::open(&root.ledger_file()).await?;
        record::superseded(&ledger, &job.request, revision, None).await
    };
    if let Err(e) = recorded.await {
        tracing::warn!(error = %format!("{e:#}"), "failed to record a superseded push");
    }
    let _ = job.replies.send(Reply::Done {
        ok: true,
        message: Some(format!(
            "{} was superseded by a newer push while queued; not deployed",
            revision.short()
        )),
    });
}

/// Runs queued deploys one at a time.
async fn work(daemon: Arc<Daemon>) {
    loop {
        let job = match daemon.next() {
            None => {
                daemon.wake.notified().await;
                continue;
            }
            Some(Work::Superseded(job)) => {
                record_superseded(&daemon.root, job).await;
                continue;
            }
            Some(Work::Deploy(job)) => job,
        };
        daemon.busy.store(true, Ordering::SeqCst);
        let reporter = Reporter::new().with_tracing();
        reporter.add_sink(Box::new(ClientSink(job.replies.clone())));
        let switch: &dyn Switch = daemon.switch.as_ref();
        let result = pipeline::deploy(
            &daemon.root,
            job.request,
            Traffic::Proxied(switch),
            &reporter,
        )
        .await;
        let done = match result {
            Ok(()) => Reply::Done {
                ok: true,
                message: None,
            },
            Err(e) => Reply::Done {
                ok: false,
                message: Some(format!("{e:#}")),
            },
        };
        let _ = job.replies.send(done);
        daemon.busy.store(false, Ordering::SeqCst);
    }
}

/// Streams a deploy's events to the client that asked for it. Never blocks the deploy: a
/// client that reads slowly gets its lines later; one that left detaches the sink.
struct ClientSink(mpsc::UnboundedSender<Reply>);

impl Sink for ClientSink {
    fn emit(&mut self, _at: chrono::DateTime<chrono::Local>, event: &Event) -> std::io::Result<()> {
        self.0.send(Reply::Event(event.clone())).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the pusher disconnected")
        })
    }

    fn name(&self) -> String {
        "pusher".to_owned()
    }
}

/// The pipeline's view of the proxy.
struct ProxySwitch {
    proxy: Proxy,
    listening: Mutex<BTreeSet<SocketAddr>>,
    drain_timeout: Duration,
}

impl ProxySwitch {
    /// Listens where needed and points each port at its backend.
    fn route(&self, routes: Vec<Route>) -> anyhow::Result<()> {
        let mut listening = self.listening.lock().expect("listening lock");
        for r in &routes {
            if !listening.contains(&r.listen) {
                self.proxy.listen(r.listen)?;
                listening.insert(r.listen);
            }
            if self.proxy.backend(r.listen.port()) != Some(r.backend) {
                self.proxy.set_backend(r.listen.port(), r.backend)?;
            }
        }
        Ok(())
    }
}

impl Switch for ProxySwitch {
    fn switch(&self, routes: Vec<Route>) -> BoxFuture<'_, anyhow::Result<()>> {
        async move { self.route(routes) }.boxed()
    }

    fn drain(&self, old: Vec<SocketAddr>) -> BoxFuture<'_, ()> {
        async move {
            for addr in old {
                match self.proxy.drain(addr, self.drain_timeout).await {
                    Ok(report) => tracing::info!(%report, "drained"),
                    Err(e) => tracing::warn!(%addr, error = %e, "not drained"),
                }
            }
            tracing::info!(stats = %self.proxy.stats(), "proxy");
        }
        .boxed()
    }
}
