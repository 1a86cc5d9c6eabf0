//! The orchestrator: resolve → lock → record → the stages (`stages.rs`) → record → retain.
//! The only code that touches every edge; each step is reported, and any failure leaves
//! what runs running and closes the deploy's ledger row (`record.rs`).

pub(crate) mod backups;
mod confine;
pub(crate) mod environments;
pub(crate) mod export;
mod load;
pub(crate) mod lock;
pub(crate) mod preflight;
pub(crate) mod reconcile;
pub(crate) mod record;
mod release;
pub(crate) mod retention;
mod stages;
pub(crate) mod traffic;

use std::collections::BTreeMap;

use anyhow::Context;

use crate::cancel;
use crate::docker;
use crate::git;
use crate::ids::{DeploymentId, EnvName, ProjectName, Revision, UserName};
use crate::ledger::{Ledger, Status, Trigger};
use crate::report::Reporter;
use crate::root::Root;
use crate::settings::Settings;

pub(crate) use load::{Sources, compose_file_names, load_spec, work_tree_sources};

use traffic::Traffic;

/// What to deploy and on whose behalf.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub(crate) target: Target,
    pub(crate) user: UserName,
    /// The uid that asked (see `identity`), recorded beside `user`.
    pub(crate) uid: u32,
    pub(crate) trigger: Trigger,
    /// Dumps to restore before the release phase: service → file name in `ROOT/backups`
    /// (`deploy restore-db`, `deploy --revision REV --restore-db`, `deploy import`).
    pub(crate) restore: BTreeMap<String, String>,
    /// Its `queued` row, when the daemon's queue recorded it there before it ran.
    pub(crate) queued: Option<DeploymentId>,
    /// The environment it deploys: the pushed branch's, or `--env`'s.
    pub(crate) env: EnvName,
}

#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A push moved the deploy branch to this commit.
    Pushed { revision: Revision, refname: String },
    /// A revision expression from the command line (`--revision`), or the branch tip.
    Expression(Option<String>),
}

/// Runs one deploy from start to finish, as a short list of stages: resolve what to deploy,
/// lock ROOT, open the ledger row, then the stages of `stages::run`, and record the outcome
/// (closing the row whatever failed) and apply retention.
pub(crate) async fn deploy(
    root: &Root,
    mut request: Request,
    traffic: Traffic<'_>,
    reporter: &Reporter,
) -> anyhow::Result<()> {
    // From here on, every path, name and setting is the environment's.
    let root = &root.with_env(request.env.clone());
    let settings = Settings::load(root)?;
    reporter.limit_output(settings.build_log_limit);
    // Resolve before taking the lock: an unknown revision changes nothing.
    let revision = resolve(root, &request, &settings.branch).await?;
    // Before any row exists, so `deploy cancel`'s signal never finds the process deaf.
    let signals = cancel::Signals::register()?;
    let (_lock, queued) = take_lock(root, &request, &revision, reporter).await?;
    environments::prepare(root, &mut request, reporter).await?;
    // A new preview's branch is known now.
    let settings = Settings::load(root)?;
    let project = settings.project(root)?;
    reconcile::run(root, &settings, &project, traffic, reporter).await?;
    let record = record::open(root, &request, queued, revision, &settings.branch, reporter).await?;
    let (cancel, _listening) = signals.listen(record.ledger.clone(), record.id);
    record.notify(&settings.notify, &project, reporter).await;
    reporter.info(format!(
        "deploy {}: `deploy cancel {}` on the host stops it; Ctrl-C here does not",
        record.id, record.id.0
    ));
    let outcome = async {
        record.describe(root, &project, &request, reporter).await?;
        let run = stages::Run {
            root,
            settings: &settings,
            project: &project,
            revision: &record.revision,
            trigger: request.trigger,
            traffic,
            reporter,
            docker: docker::connect().await?,
            record: &record,
            restore: &request.restore,
            cancel: &cancel,
        };
        let images = stages::run(&run).await?;
        anyhow::Ok((run.docker, images))
    }
    .await;
    let (docker, outcome) = match outcome {
        Ok((docker, images)) => (Some(docker), Ok(images)),
        Err(e) => (None, Err(e)),
    };
    let closed = record.close(outcome, &cancel, reporter).await;
    record.notify(&settings.notify, &project, reporter).await;
    closed?;
    if let Some(docker) = docker {
        retain(root, &docker, &record, &settings, &project, reporter).await;
    }
    Ok(())
}

/// The commit a request names now, with its environment's branch.
pub(crate) async fn resolve_now(root: &Root, request: &Request) -> anyhow::Result<Revision> {
    let root = &root.with_env(request.env.clone());
    resolve(root, request, &Settings::load(root)?.branch).await
}

/// The commit a request names: the pushed one, or the expression's (the deploy branch's
/// tip when there is none).
async fn resolve(root: &Root, request: &Request, branch: &str) -> anyhow::Result<Revision> {
    match &request.target {
        Target::Pushed { revision, .. } => Ok(revision.clone()),
        Target::Expression(expr) => {
            let expr = expr.clone().unwrap_or_else(|| branch.to_owned());
            let (repo, branch) = (root.repo(), branch.to_owned());
            Ok(blocking(move || git::resolve(&repo, &expr, &branch)).await??)
        }
    }
}

/// Takes the ROOT lock. While another deploy holds it, this one is `queued` in the ledger
/// (the daemon queues it there before), where `deploy status` shows it and `deploy cancel`
/// stops it. Returns the queued row, which becomes the deploy's.
async fn take_lock(
    root: &Root,
    request: &Request,
    revision: &Revision,
    reporter: &Reporter,
) -> anyhow::Result<(lock::Lock, Option<DeploymentId>)> {
    let holder = holder(request, revision);
    if let Some(lock) = lock::try_acquire(&root.lock_file(), &holder)? {
        return Ok((lock, request.queued));
    }
    // A preview made by this push has no ledger yet to be queued in.
    if !root.dir().is_dir() {
        return Ok((
            lock::acquire(&root.lock_file(), &holder, reporter).await?,
            None,
        ));
    }
    let ledger = Ledger::open(&root.ledger_file()).await?;
    let id = match request.queued {
        Some(id) => id,
        None => {
            let row = record::new_row(request, revision, std::path::PathBuf::new());
            ledger.queue(&row).await?
        }
    };
    let (cancel, _listening) = cancel::Signals::register()?.listen(ledger.clone(), id);
    let path = root.lock_file();
    tokio::select! {
        lock = lock::acquire(&path, &holder, reporter) => Ok((lock?, Some(id))),
        canceled = cancel.requested() => {
            let why = format!("{canceled} while queued");
            ledger.mark(id, Status::Canceled, Some(&why)).await?;
            reporter.error(format!("deploy {}: {why}", revision.short()));
            anyhow::bail!("deploy of {} {why}", revision.short())
        }
    }
}

/// What a deploy waiting for the lock is told about the one holding it.
fn holder(request: &Request, revision: &Revision) -> String {
    format!(
        "the deploy of {} by {} (pid {}, since {})",
        revision.short(),
        request.user,
        std::process::id(),
        chrono::Local::now().format("%H:%M:%S")
    )
}

/// After a success: keep what rollback needs. A failure is a warning; the deploy is live.
async fn retain(
    root: &Root,
    docker: &docker::Docker,
    record: &record::Record,
    settings: &Settings,
    project: &ProjectName,
    reporter: &Reporter,
) {
    let kept = retention::apply(
        root,
        docker,
        &record.ledger,
        project,
        &record.revision,
        settings.retention,
        settings.build_cache,
        reporter,
    )
    .await;
    if let Err(e) = kept {
        reporter.warn(format!("retention: {e:#}"));
    }
    if let Err(e) = retain_dumps(root, &record.ledger, settings, reporter).await {
        reporter.warn(format!("backup_retention: {e:#}"));
    }
}

/// Removes dumps beyond `backup_retention`, keeping those a rollback to a retained
/// revision would restore.
pub(crate) async fn retain_dumps(
    root: &Root,
    ledger: &crate::ledger::Ledger,
    settings: &Settings,
    reporter: &Reporter,
) -> anyhow::Result<()> {
    let retained = ledger
        .succeeded_revisions(u32::try_from(settings.retention).unwrap_or(u32::MAX))
        .await?;
    backups::retain(root, ledger, settings.backup_retention, &retained, reporter).await
}

/// Runs `work` to its end on a thread and runtime of its own: for a task the runtime may
/// move between threads, which cannot hold a future that opens a ledger (the compiler
/// cannot prove sqlx's migration future `Send`).
pub(crate) async fn detached<T, F, Fut>(work: F) -> anyhow::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(work())
    })
    .await
    .context("a background task panicked")?
}

/// Runs blocking git2 work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a background task panicked")
}
