//! `deploy serve`: one daemon per ROOT. It owns the app's published ports through the
//! proxy, runs deploys handed over on `ROOT/deploy.sock` one at a time, restarts unhealthy
//! containers, and picks up where it left off after a restart.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::UnixListener;
use tokio::sync::{Notify, mpsc};

use crate::docker::routes::Route;
use crate::docker::{self, Docker};
use crate::ids::{DeploymentId, ProjectName};
use crate::ledger::{Ledger, Status};
use crate::pipeline::traffic::{Switch, Traffic};
use crate::pipeline::{self, Request, Target, record};
use crate::report::{Event, Reporter, Sink};
use crate::root::Root;
use crate::settings::Settings;

use super::config::ServeConfig;
use super::protocol::Reply;
use super::proxy::{Proxy, ProxyConfig, tls};
use super::switch::{HostProxy, ProxySwitch, Switches};
use super::{autoheal, control, descriptors};

/// How long a stopping daemon lets proxied connections finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Runs the daemon for `roots` until SIGTERM or SIGINT. A root that cannot be served (its
/// settings, its socket) is named in the log and left out; the others serve.
pub(crate) async fn run(roots: Vec<Root>, serve: ServeConfig) -> anyhow::Result<()> {
    // First, so that everything after it opens under the raised limit.
    let proxy_config = proxy_config();
    // The program's path now, before an upgrade may replace the file (then this process's
    // own `/proc/self/exe` names a deleted file).
    let exe = std::env::current_exe().context("failed to find this program")?;
    let ready = super::upgrade::ready_fd();
    let handed = super::activation::take();
    let (host, certs) = host_proxy(&roots, serve, proxy_config, handed.tcp);
    let mut controls = handed.unix;

    let mut served = Vec::new();
    for (index, root) in roots.iter().enumerate() {
        let control = controls.remove(&root.socket());
        match start_root(root, &host, (&certs, index + 1), control).await {
            Ok(daemon) => served.push(daemon),
            Err(e) => {
                tracing::error!(root = %root.path().display(), error = %format!("{e:#}"), "this root is not served")
            }
        }
    }
    if served.is_empty() {
        bail!("no root could be served; `ROOT/serve.log` of each says why");
    }
    let paths: Vec<_> = served
        .iter()
        .map(|s| s.daemon.root.path().to_path_buf())
        .collect();
    super::upgrade::announce_ready(ready, &paths);

    let signal = |kind| tokio::signal::unix::signal(kind).context("failed to listen for signals");
    let mut term = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hup = signal(tokio::signal::unix::SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => match upgrade(&exe, &host, &mut served).await {
                Ok(pid) => {
                    tracing::info!(pid, "handed over to the new daemon; finishing what is open");
                    let report = host.proxy.shutdown(SHUTDOWN_GRACE).await;
                    tracing::info!(?report, "deploy serve stopped");
                    return Ok(());
                }
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "upgrade failed; this daemon carries on");
                    super::upgrade::failed(&paths, &e);
                }
            },
        }
    }
    stop(served, &host).await;
    Ok(())
}

/// The proxy every root shares, with the certificates it serves: the operator's first,
/// then each root's from ACME (folder 1 + the root's index). It waits as long for an
/// answer as the most patient root asks.
fn host_proxy(
    roots: &[Root],
    serve: ServeConfig,
    config: ProxyConfig,
    handed: BTreeMap<std::net::SocketAddr, std::net::TcpListener>,
) -> (Arc<HostProxy>, Arc<tls::Certs>) {
    let upstream_timeout = (roots.iter())
        .filter_map(|root| Settings::load(root).ok())
        .map(|settings| settings.proxy_timeout)
        .max()
        .unwrap_or(config.upstream_timeout);
    let config = ProxyConfig {
        upstream_timeout,
        ..config
    };
    let certs = tls::Certs::load(&super::acme::cert_dirs(&serve.certs, roots));
    certs.watch();
    let proxy = Proxy::with_certs(config, Some(Arc::clone(&certs)));
    proxy.hand_over(handed);
    (Arc::new(HostProxy::new(proxy, serve)), certs)
}

/// SIGTERM: no new deploys, the running ones finish, connections drain, the sockets go.
async fn stop(served: Vec<Served>, host: &HostProxy) {
    tracing::info!("stopping: no new deploys; the running ones finish first");
    for s in &served {
        s.control.abort();
        let _ = std::fs::remove_file(s.daemon.root.socket());
        s.daemon.stop();
    }
    for s in served {
        s.daemon.idle().await;
        drop(s.worker);
    }
    tracing::info!(stats = %host.proxy.stats(), "proxy");
    let report = host.proxy.shutdown(SHUTDOWN_GRACE).await;
    tracing::info!(?report, "deploy serve stopped");
}

/// A root being served.
struct Served {
    daemon: Arc<Daemon>,
    worker: std::thread::JoinHandle<()>,
    /// The task accepting on the control socket.
    control: tokio::task::JoinHandle<()>,
    /// A copy of the control socket: accepting starts again from it, or a successor gets it.
    control_socket: std::os::fd::OwnedFd,
}

/// Hands every socket to a new daemon started from `exe`, once this one's deploys are done
/// (no push is accepted meanwhile: they wait in the control sockets' backlog). Returns the
/// new daemon's pid; on failure, accepting pushes starts again here.
async fn upgrade(
    exe: &std::path::Path,
    host: &HostProxy,
    served: &mut [Served],
) -> anyhow::Result<u32> {
    tracing::info!(exe = %exe.display(), "upgrading: finishing the deploys under way and queued, then handing over");
    for s in served.iter() {
        s.control.abort();
    }
    for s in served.iter() {
        s.daemon.settle().await;
    }
    let handed = async {
        let mut sockets = host.proxy.listening_sockets()?;
        for s in served.iter() {
            sockets.push(s.control_socket.try_clone()?);
        }
        anyhow::Ok(sockets)
    };
    let started = match handed.await {
        Ok(sockets) => super::upgrade::start_successor(exe, sockets).await,
        Err(e) => Err(e.context("failed to copy the listening sockets")),
    };
    if started.is_err() {
        for s in served.iter_mut() {
            let listener = control_listener(&s.control_socket)?;
            s.control = tokio::spawn(control::serve(listener, s.daemon.clone()));
        }
    }
    started
}

/// A listener on a copy of `socket`.
fn control_listener(socket: &std::os::fd::OwnedFd) -> anyhow::Result<UnixListener> {
    let std = std::os::unix::net::UnixListener::from(socket.try_clone()?);
    std.set_nonblocking(true)?;
    Ok(UnixListener::from_std(std)?)
}

/// Serves one root: its routes restored, a deploy it was running settled, its queue, control
/// socket, autoheal, ACME and what runs beside.
async fn start_root(
    root: &Root,
    host: &Arc<HostProxy>,
    (certs, acme_dir): (&Arc<tls::Certs>, usize),
    handed: Option<std::os::unix::net::UnixListener>,
) -> anyhow::Result<Served> {
    let settings = Settings::load(root)?;
    let project = settings.project(root)?;
    let docker = docker::connect().await?;
    let control_socket: std::os::fd::OwnedFd = match handed {
        Some(listener) => listener.into(),
        None => bind_socket(root)?.into_std()?.into(),
    };
    let listener = control_listener(&control_socket)?;
    let switches = Arc::new(Switches::new(
        Arc::clone(host),
        root.clone(),
        settings.drain_timeout,
    ));
    if let Some(acme) = &settings.acme {
        // instant-acme's client takes the process's default TLS provider.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let routed = Arc::clone(&switches);
        super::acme::start(super::acme::Acme {
            settings: acme.clone(),
            root: root.clone(),
            certs: Arc::clone(certs),
            own: acme_dir,
            challenges: host.proxy.challenges(),
            hosts: Box::new(move || routed.hosts()),
            wake: Arc::clone(&switches.hosts_routed),
        });
    }
    let busy = Arc::new(AtomicBool::new(false));
    // Production, and each other environment that ran before. A deploy another process
    // runs now is its own to finish.
    let all = Settings::load_all(root)?;
    let mut healing = Vec::new();
    for env in pipeline::environments::all(root, &all) {
        let view = root.with_env(env.name.clone());
        if env.name.is_production() || view.ledger_file().is_file() {
            let switch = switches.get(&env.name);
            // Production's failure is the root's; another environment's is its own.
            match start_env(&view, &docker, &switch).await {
                Ok(project) => healing.push(project),
                Err(e) if env.name.is_production() => return Err(e),
                Err(e) => {
                    tracing::error!(env = %env.name, error = %format!("{e:#}"), "this environment is not served until its next deploy")
                }
            }
        }
    }
    let daemon = Arc::new(Daemon {
        root: root.clone(),
        queue: Mutex::new(VecDeque::new()),
        wake: Notify::new(),
        busy,
        idle: Notify::new(),
        stopping: AtomicBool::new(false),
        switches,
        runtime: tokio::runtime::Handle::current(),
        healing: Mutex::new(std::collections::HashSet::new()),
    });
    for project in healing {
        daemon.heal(&docker, project);
    }
    let worker = start_worker(daemon.clone())?;
    start_beside(&daemon, &settings, &host.proxy).await?;
    let control = tokio::spawn(control::serve(listener, daemon.clone()));
    tracing::info!(root = %root.path().display(), %project, version = crate::cli::VERSION, "deploy serve is ready");
    Ok(Served {
        daemon,
        worker,
        control,
        control_socket,
    })
}

/// One environment of a root, as the daemon starts: traffic first goes where its ledger
/// says the live revision runs; then a deploy this daemon ran when it was killed is settled
/// (finished, with traffic switched to it, or put back). Returns its project, for autoheal.
async fn start_env(
    root: &Root,
    docker: &Docker,
    switch: &ProxySwitch,
) -> anyhow::Result<ProjectName> {
    let settings = Settings::load(root)?;
    let project = settings.project(root)?;
    let ledger = Ledger::open(&root.ledger_file()).await?;
    let live = (ledger.last_succeeded().await?).map(|d| d.revision.to_string());
    restore(docker, &project, live.as_deref(), switch).await?;
    if let Some(_lock) = pipeline::lock::try_acquire(&root.lock_file(), "deploy serve, starting")? {
        let reporter = Reporter::new().with_tracing();
        let traffic = Traffic::Proxied(switch);
        pipeline::reconcile::run(root, &settings, &project, traffic, &reporter).await?;
    }
    Ok(project)
}

/// What runs beside the deploys: `deploy cancel`'s signal for queued deploys, the backup
/// schedule, the dashboard, and the delivery of notifications a stopped daemon left.
async fn start_beside(
    daemon: &Arc<Daemon>,
    settings: &Settings,
    proxy: &Proxy,
) -> anyhow::Result<()> {
    let mut cancels = crate::cancel::Signals::register()?;
    let canceling = daemon.clone();
    tokio::spawn(async move {
        while cancels.next().await {
            if let Err(e) = canceling.cancel_queued().await {
                tracing::warn!(error = %format!("{e:#}"), "failed to cancel a queued deploy");
            }
        }
    });
    let sweeping = daemon.clone();
    tokio::spawn(async move {
        loop {
            let root = sweeping.root.clone();
            let swept = pipeline::detached(move || async move {
                let reporter = Reporter::new().with_tracing();
                pipeline::environments::sweep(&root, &[], &reporter).await
            });
            match swept.await {
                Ok(gone) if !gone.is_empty() => {
                    if let Err(e) = sweeping.refresh().await {
                        tracing::warn!(error = %format!("{e:#}"), "failed to stop routing to the previews torn down");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "previews past their ttl"),
            }
            tokio::time::sleep(pipeline::environments::SWEEP_EVERY).await;
        }
    });
    let root = &daemon.root;
    super::schedule::start(root.clone()).context("failed to start the backup schedule")?;
    // A dashboard that cannot start (its token file) is said in the log; the rest serves.
    if let Err(e) = super::dashboard::start(root.clone(), settings.clone(), proxy).await {
        tracing::error!(error = %format!("{e:#}"), "dashboard");
    }
    if let Err(e) = crate::notify::start_deliverer(root) {
        tracing::warn!(error = %format!("{e:#}"), "notifications");
    }
    Ok(())
}

/// The deploy pipeline runs on a thread of its own: its future borrows too much for the
/// compiler to prove it `Send`, and one deploy at a time needs no more than one thread.
fn start_worker(daemon: Arc<Daemon>) -> anyhow::Result<std::thread::JoinHandle<()>> {
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
        .context("failed to start the deploy worker")
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
/// ports to listen on and where to send them (a service's replicas all). No deploy needed.
async fn restore(
    docker: &Docker,
    project: &ProjectName,
    live: Option<&str>,
    switch: &ProxySwitch,
) -> anyhow::Result<()> {
    let routes = live_routes(docker, project, live).await?;
    if routes.is_empty() {
        return Ok(());
    }
    for r in &routes {
        tracing::info!(listen = %r.listen, backend = %r.backend, "resuming proxying to the live container");
    }
    // Hostnames apart: a hostname listener that cannot open (another server holds port
    // 80, say) leaves them unserved, said in the log, and the ports still serve.
    let (hosts, ports): (Vec<Route>, Vec<Route>) = (routes.into_iter())
        .partition(|r| matches!(r.listen, crate::docker::routes::Listen::Host { .. }));
    switch.route(ports)?;
    if let Err(e) = switch.route(hosts) {
        tracing::error!(error = %format!("{e:#}"), "hostnames not served until the next deploy");
    }
    Ok(())
}

/// The routes the running containers of `project` ask for, through their labels.
async fn live_routes(
    docker: &Docker,
    project: &ProjectName,
    live: Option<&str>,
) -> anyhow::Result<Vec<Route>> {
    let mut containers: Vec<_> = docker::observe::containers(docker, project)
        .await?
        .into_iter()
        .filter(|c| c.running && !c.name.ends_with(crate::plan::names::PARKED_SUFFIX))
        .collect();
    // When a killed deploy left two containers for one port, the live revision's wins (the
    // settling that follows moves traffic if the other goes live); then Docker's order,
    // newest first. The sort is stable.
    containers.sort_by_key(|c| c.revision.as_deref() != live);
    let mut routes = Vec::new();
    let mut seen = BTreeSet::new();
    for c in containers {
        for r in docker::routes::of_container(docker, &c.id).await? {
            // One container per port and replica: a service's replicas share its ports.
            if seen.insert((r.listen.clone(), c.replica)) {
                routes.push(r);
            }
        }
    }
    Ok(routes)
}

pub(super) struct Daemon {
    pub(super) root: Root,
    queue: Mutex<VecDeque<Work>>,
    wake: Notify,
    /// A deploy is running: autoheal leaves containers to its health gate meanwhile. Set
    /// under the queue's lock when a deploy is taken, so a stop sees it queued or running.
    busy: Arc<AtomicBool>,
    /// Told when a deploy ends.
    idle: Notify,
    /// No deploy starts any more; the ones queued were answered.
    stopping: AtomicBool,
    /// The proxy's switch of each environment.
    switches: Arc<Switches>,
    /// The daemon's runtime, where autoheal runs (the worker has a runtime of its own).
    runtime: tokio::runtime::Handle,
    /// The projects autoheal watches: every environment's, from its first deploy on.
    healing: Mutex<std::collections::HashSet<ProjectName>>,
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
    /// Queues a deploy, recorded as `queued` in the ledger (where `deploy status` shows it
    /// and `deploy cancel` finds it). A push replaces any queued (not yet running) push of
    /// the same branch: deploying the older one first would only delay the newer.
    pub(super) async fn enqueue(&self, mut job: Job) {
        let queued = queue_row(self.root.clone(), job.request.clone());
        match queued.await {
            Ok(id) => job.request.queued = id,
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "failed to record a queued deploy"),
        }
        {
            let mut queue = self.queue.lock().expect("queue lock");
            if self.stopping.load(Ordering::SeqCst) {
                not_started(job);
                return;
            }
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

    /// The next work; a deploy taken marks the daemon busy in the same breath, so `stop`
    /// never finds it neither queued nor running.
    fn next(&self) -> Option<Work> {
        let mut queue = self.queue.lock().expect("queue lock");
        let work = queue.pop_front();
        if matches!(work, Some(Work::Deploy(_))) {
            self.busy.store(true, Ordering::SeqCst);
        }
        work
    }

    /// Routes only to the containers that run now (after `deploy down`): a port whose
    /// containers are gone answers `503` instead of `502`.
    pub(super) async fn refresh(&self) -> anyhow::Result<()> {
        let docker = docker::connect().await?;
        for (env, switch) in self.switches.all() {
            let view = self.root.with_env(env);
            let project = Settings::load(&view)?.project(&view)?;
            let live = match view.ledger_file().is_file() {
                true => {
                    let path = view.ledger_file();
                    pipeline::detached(move || async move {
                        Ok(Ledger::open(&path).await?.last_succeeded().await?)
                    })
                    .await?
                }
                false => None,
            };
            let live = live.map(|d| d.revision.to_string());
            let routes = live_routes(&docker, &project, live.as_deref()).await?;
            switch.refresh(routes)?;
        }
        Ok(())
    }

    /// Takes out of the queue the deploys `deploy cancel` asked to stop (it signals this
    /// process, and writes who asked into their rows), and records them `canceled`.
    async fn cancel_queued(&self) -> anyhow::Result<()> {
        let rows: Vec<(crate::ids::EnvName, DeploymentId)> = {
            let queue = self.queue.lock().expect("queue lock");
            (queue.iter())
                .filter_map(|w| match w {
                    Work::Deploy(j) => Some((j.request.env.clone(), j.request.queued?)),
                    Work::Superseded(_) => None,
                })
                .collect()
        };
        let mut asked = BTreeMap::new();
        for (env, id) in rows {
            let path = self.root.with_env(env.clone()).ledger_file();
            let by = pipeline::detached(move || async move {
                Ok(Ledger::open(&path).await?.cancel_requested(id).await?)
            });
            if let Some(by) = by.await? {
                asked.insert((env, id), by);
            }
        }
        let key = |j: &Job| j.request.queued.map(|id| (j.request.env.clone(), id));
        let canceled: Vec<(Job, String)> = {
            let mut queue = self.queue.lock().expect("queue lock");
            let (out, kept): (VecDeque<Work>, VecDeque<Work>) = queue.drain(..).partition(
                |w| matches!(w, Work::Deploy(j) if key(j).is_some_and(|k| asked.contains_key(&k))),
            );
            *queue = kept;
            out.into_iter()
                .filter_map(|w| match w {
                    Work::Deploy(job) => {
                        let by = asked.get(&key(&job)?)?.clone();
                        Some((job, by))
                    }
                    Work::Superseded(_) => None,
                })
                .collect()
        };
        for (job, by) in canceled {
            let why = format!("canceled by {by} while queued");
            if let Some(id) = job.request.queued {
                let (path, marked) = (
                    self.root.with_env(job.request.env.clone()).ledger_file(),
                    why.clone(),
                );
                pipeline::detached(move || async move {
                    Ok(Ledger::open(&path)
                        .await?
                        .mark(id, Status::Canceled, Some(&marked))
                        .await?)
                })
                .await?;
            }
            let _ = job.replies.send(Reply::Done {
                ok: false,
                message: Some(why),
            });
        }
        Ok(())
    }

    /// Autoheal watches `project` from now on (once).
    fn heal(&self, docker: &Docker, project: ProjectName) {
        let mut healing = self.healing.lock().unwrap_or_else(|p| p.into_inner());
        if healing.insert(project.clone()) {
            let watch = autoheal::watch(docker.clone(), project, self.busy.clone());
            self.runtime.spawn(watch);
        }
    }

    /// No deploy starts from now on: every queued one is answered that it did not run.
    fn stop(&self) {
        let queued: Vec<Work> = {
            let mut queue = self.queue.lock().expect("queue lock");
            self.stopping.store(true, Ordering::SeqCst);
            queue.drain(..).collect()
        };
        for work in queued {
            let (Work::Deploy(job) | Work::Superseded(job)) = work;
            not_started(job);
        }
    }

    fn done(&self) {
        self.busy.store(false, Ordering::SeqCst);
        self.idle.notify_one();
    }

    /// Returns once no deploy runs and none is queued (none may arrive meanwhile).
    async fn settle(&self) {
        loop {
            let empty = self.queue.lock().expect("queue lock").is_empty();
            if empty && !self.busy.load(Ordering::SeqCst) {
                return;
            }
            // A superseded push leaves the queue without a deploy's end to tell of it.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.idle.notified()).await;
        }
    }

    /// Returns once no deploy runs.
    async fn idle(&self) {
        while self.busy.load(Ordering::SeqCst) {
            self.idle.notified().await;
        }
    }
}

/// Records a deploy as `queued` in its environment's ledger. A preview this push makes has
/// no ledger yet: it is recorded when it runs.
async fn queue_row(root: Root, request: Request) -> anyhow::Result<Option<DeploymentId>> {
    let env = root.with_env(request.env.clone());
    if !env.dir().is_dir() {
        return Ok(None);
    }
    let revision = match &request.target {
        Target::Pushed { revision, .. } => revision.clone(),
        // A revision expression is resolved when it runs; until then the row names the
        // branch tip.
        Target::Expression(_) => pipeline::resolve_now(&root, &request).await?,
    };
    let row = record::new_row(&request, &revision, std::path::PathBuf::new());
    let path = env.ledger_file();
    pipeline::detached(
        move || async move { Ok(Some(Ledger::open(&path).await?.queue(&row).await?)) },
    )
    .await
}

/// Tells a queued client its deploy never started because the daemon stops.
fn not_started(job: Job) {
    let _ = job.replies.send(Reply::Done {
        ok: false,
        message: Some(
            "`deploy serve` is stopping, so this deploy did not start; push again once it is back, or run `deploy` without it".to_owned(),
        ),
    });
}

async fn record_superseded(root: &Root, job: Job) {
    let Target::Pushed { revision, .. } = &job.request.target else {
        return;
    };
    let recorded = async {
        let ledger = Ledger::open(&root.with_env(job.request.env.clone()).ledger_file()).await?;
        match job.request.queued {
            Some(id) => {
                let why = "a newer push of the branch arrived while it was queued";
                ledger.mark(id, Status::Superseded, Some(why)).await?;
                anyhow::Ok(())
            }
            None => record::superseded(&ledger, &job.request, revision, None).await,
        }
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
        let reporter = Reporter::new().with_tracing();
        reporter.add_sink(Box::new(ClientSink(job.replies.clone())));
        let env = daemon.root.with_env(job.request.env.clone());
        let switch = daemon.switches.get(&job.request.env);
        let switch: &dyn Switch = switch.as_ref();
        let result = pipeline::deploy(
            &daemon.root,
            job.request,
            Traffic::Proxied(switch),
            &reporter,
        )
        .await;
        // An environment made after the daemon started is healed from its first deploy.
        if result.is_ok()
            && let (Ok(docker), Ok(project)) = (
                docker::connect().await,
                Settings::load(&env).and_then(|s| s.project(&env)),
            )
        {
            daemon.heal(&docker, project);
        }
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
        daemon.done();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Revision, UserName};
    use crate::ledger::Trigger;

    async fn daemon(dir: &tempfile::TempDir) -> Daemon {
        let root = Root::new(dir.path().to_owned());
        Ledger::open(&root.ledger_file()).await.unwrap();
        let host = Arc::new(HostProxy::new(
            Proxy::new(ProxyConfig::default()),
            ServeConfig::default(),
        ));
        Daemon {
            switches: Arc::new(Switches::new(host, root.clone(), Duration::from_secs(1))),
            root,
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            busy: Arc::new(AtomicBool::new(false)),
            idle: Notify::new(),
            stopping: AtomicBool::new(false),
            runtime: tokio::runtime::Handle::current(),
            healing: Mutex::new(std::collections::HashSet::new()),
        }
    }

    fn job(sha: &str) -> (Job, mpsc::UnboundedReceiver<Reply>) {
        let (replies, rx) = mpsc::unbounded_channel();
        let request = Request {
            target: Target::Pushed {
                revision: Revision::parse(&sha.repeat(20)).unwrap(),
                refname: format!("refs/heads/b{sha}"),
            },
            user: UserName::sanitize("alice"),
            uid: 0,
            trigger: Trigger::Push,
            restore: Default::default(),
            queued: None,
            env: crate::ids::EnvName::production(),
        };
        (Job { request, replies }, rx)
    }

    /// Issue 15: a daemon that stopped while a deploy was queued left its client with no
    /// answer. Every queued client is told, a deploy already taken is waited for, and a
    /// request that arrives after the stop is answered at once.
    #[tokio::test]
    async fn issue15_a_stopping_daemon_answers_every_queued_client() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = daemon(&dir).await;
        let (first, mut first_rx) = job("aa");
        let (second, mut second_rx) = job("bb");
        daemon.enqueue(first).await;
        daemon.enqueue(second).await;
        let Some(Work::Deploy(running)) = daemon.next() else {
            panic!("the first job is taken");
        };
        daemon.stop();
        let done = |rx: &mut mpsc::UnboundedReceiver<Reply>| {
            std::iter::from_fn(|| rx.try_recv().ok())
                .any(|r| matches!(r, Reply::Done { ok: false, message: Some(m) } if m.contains("is stopping")))
        };
        assert!(done(&mut second_rx), "the queued client is told");
        assert!(!done(&mut first_rx), "the running deploy is not cut short");
        let (late, mut late_rx) = job("cc");
        daemon.enqueue(late).await;
        assert!(done(&mut late_rx), "a request after the stop is answered");

        let waiting = tokio::time::timeout(Duration::from_millis(50), daemon.idle()).await;
        assert!(waiting.is_err(), "the stop waits for the running deploy");
        drop(running);
        daemon.done();
        tokio::time::timeout(Duration::from_secs(5), daemon.idle())
            .await
            .expect("the stop ends once the deploy is done");
    }
}
