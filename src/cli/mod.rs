//! Command-line interface: clap structs, one file per subcommand, and exit codes.

mod backups;
mod cancel;
mod completions;
mod config;
mod deploy;
mod down;
mod env;
mod export;
mod history;
mod hook;
mod init;
mod logs;
mod restore;
mod serve;
pub(crate) mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::identity::{self, Pusher};
use crate::root::Root;

/// Exit codes, documented in the README.
pub(crate) mod exit {
    /// The command did what was asked.
    pub(crate) const SUCCESS: u8 = 0;
    /// The deploy or command failed; the message says why.
    pub(crate) const FAILURE: u8 = 1;
    /// The command line itself was wrong (clap's own code).
    #[allow(dead_code, reason = "clap exits with it; listed here to document it")]
    pub(crate) const USAGE: u8 = 2;
}

/// The version and the commit it was built from: `0.1.0 (1a2b3c4d5e6f)`.
pub(crate) const VERSION: &str =
    concat!(env!("CARGO_PKG_VERSION"), " (", env!("DEPLOY_COMMIT"), ")");

#[derive(Debug, Parser)]
#[command(
    name = "deploy",
    version = VERSION,
    about = "git push deploys your app and its PostgreSQL stack on this Docker host"
)]
pub(crate) struct Cli {
    /// The deploy root (holds code.git, code/, build-logs/, db-data/). Found from the hook's
    /// repo or the current directory when not given. `deploy serve` takes several.
    #[arg(long, global = true, env = "DEPLOY_ROOT", value_name = "ROOT", action = clap::ArgAction::Append)]
    root: Vec<PathBuf>,

    /// The environment a command acts on (`environments:` and previews in deploy.yml);
    /// `production` when not given.
    #[arg(long, global = true, value_name = "NAME")]
    env: Option<crate::ids::EnvName>,

    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    deploy: deploy::Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a deploy root: bare repo, work tree, secrets dir, build logs, ledger and hook.
    Init(init::Args),
    /// Run by the post-receive hook: deploy when the deploy branch moved.
    Hook(hook::Args),
    /// Show the live revision and the state of each container.
    Status(status::Args),
    /// List past deploys, newest first.
    History(history::Args),
    /// Print a deploy's build log.
    Logs(logs::Args),
    /// Stop the running deploy; what it replaced is put back, as on any failure.
    ///
    /// Works on a deploy in a hook's own process or in `deploy serve`. A build is aborted at
    /// the engine; a release command or a container still starting is stopped and removed.
    /// The ledger row says `canceled`, and who canceled it.
    Cancel(cancel::Args),
    /// Stop the stack and remove its containers and networks; data is kept.
    Down(down::Args),
    /// Print the compose file as deploy will run it: layered, interpolated, long forms.
    ///
    /// The output is a compose file under the Compose Specification (a test checks it
    /// against the specification's JSON schema), which `docker compose` (v2) and other
    /// tools of the specification read back; docker-compose 1.29 refuses its top-level
    /// `name:` and the keys newer than its own file format. Keys are sorted, a literal `$`
    /// is written `$$`, and secrets appear as the paths of their files, never as values.
    /// Warnings (unset variables) go to stderr.
    Config(config::Args),
    /// Run the daemon: zero-downtime proxy, deploys that outlive the push, autoheal.
    Serve(serve::Args),
    /// List the database dumps in ROOT/backups, newest first.
    Backups(backups::ListArgs),
    /// Dump the live stack's PostgreSQL databases now (under the lock), into ROOT/backups.
    Backup(backups::TakeArgs),
    /// Restore database dumps under the code that runs; the app is stopped meanwhile.
    ///
    /// Each database is restored with `pg_restore --clean --if-exists --single-transaction`
    /// inside its own container, so a restore that fails leaves it as it was. The app's
    /// containers are stopped while it runs and started again after.
    RestoreDb(restore::Args),
    /// Write one archive of everything that brings the app up elsewhere (mode 0600).
    ///
    /// The bare repo, deploy.yml and its env file, code/.secrets, the ledger, the build
    /// logs, and a fresh dump of every database, taken under the lock.
    Export(export::ExportArgs),
    /// Create a new root from an archive of `deploy export`, and deploy its live revision
    /// with the data restored.
    Import(export::ImportArgs),
    /// Create, list or destroy environments: staging beside production, previews of branches.
    Env {
        #[command(subcommand)]
        command: env::Command,
    },
    /// Print the completion script for a shell (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
    /// Write the man pages (roff) into DIR, as the Debian package installs them.
    #[command(hide = true)]
    Man { dir: PathBuf },
    /// Deliver the queued notifications of ROOT, retrying until each is delivered or given
    /// up; what a deploy starts in the background.
    #[command(hide = true)]
    DeliverNotifications,
}

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon keeps its own log in ROOT/serve.log; the guard flushes it at exit.
    let _log_guard = match &cli.command {
        Some(Command::Serve(args)) if !args.upgrade => match serve::roots(cli.root.clone()) {
            Ok(roots) => Some(init_daemon_tracing(&roots)),
            Err(e) => return fail(&e),
        },
        _ => {
            init_tracing();
            None
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&anyhow::anyhow!(e).context("failed to start the async runtime")),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => fail(&e),
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    // `--root` may come before a subcommand; the deploy's own flags may not.
    if cli.command.is_some() && cli.deploy.given() {
        eprintln!(
            "deploy: --revision and --restore-db go with `deploy` alone, not with a subcommand"
        );
        return Ok(exit::USAGE);
    }
    if cli.env.is_some()
        && matches!(
            cli.command,
            Some(
                Command::Init(_)
                    | Command::Hook(_)
                    | Command::Serve(_)
                    | Command::Env { .. }
                    | Command::Import(_)
                    | Command::Export(_)
            )
        )
    {
        eprintln!(
            "deploy: --env goes with the commands that act on one environment's stack, not with this one"
        );
        return Ok(exit::USAGE);
    }
    let root = |roots| root(roots, cli.env.clone());
    match cli.command {
        Some(Command::Init(args)) => init::run(args).await,
        Some(Command::Hook(args)) => hook::run(root(cli.root)?, args).await,
        Some(Command::Env { command }) => env::run(root(cli.root)?, command).await,
        Some(Command::Status(args)) => status::run(root(cli.root)?, args).await,
        Some(Command::History(args)) => history::run(root(cli.root)?, args).await,
        Some(Command::Logs(args)) => logs::run(root(cli.root)?, args).await,
        Some(Command::Cancel(args)) => cancel::run(root(cli.root)?, args).await,
        Some(Command::Down(args)) => down::run(root(cli.root)?, args).await,
        Some(Command::Config(args)) => config::run(root(cli.root)?, args).await,
        Some(Command::Serve(args)) => serve::run(serve::roots(cli.root)?, args).await,
        Some(Command::Backups(args)) => backups::list(root(cli.root)?, args).await,
        Some(Command::Backup(args)) => backups::take(root(cli.root)?, args).await,
        Some(Command::RestoreDb(args)) => restore::run(root(cli.root)?, args).await,
        Some(Command::Export(args)) => export::run_export(root(cli.root)?, args).await,
        Some(Command::Import(args)) => export::run_import(args).await,
        Some(Command::Completions(args)) => completions::run(args),
        Some(Command::Man { dir }) => completions::man(&dir),
        Some(Command::DeliverNotifications) => {
            crate::notify::deliver(&root(cli.root)?).await?;
            Ok(exit::SUCCESS)
        }
        None => deploy::run(root(cli.root)?, cli.deploy).await,
    }
}

/// Deploys through `deploy serve` when it answers (the deploy then goes on even if this
/// process dies), or here when it does not.
async fn run_deploy(
    root: &Root,
    request: crate::pipeline::Request,
    reporter: &crate::report::Reporter,
) -> anyhow::Result<()> {
    // The same bound on output as the pipeline's own, whichever process runs it.
    reporter.limit_output(crate::settings::Settings::load(root)?.build_log_limit);
    let _unstoppable = ctrl_c_does_not_cancel(reporter)?;
    match crate::serve::client::hand_off(root, &request, reporter).await {
        Some(result) => result,
        None => {
            crate::pipeline::deploy(
                root,
                request,
                crate::pipeline::traffic::Traffic::Direct,
                reporter,
            )
            .await
        }
    }
}

/// A deploy is stopped only by `deploy cancel`, which puts back what it replaced: Ctrl-C in
/// the pusher's terminal (SIGINT to a local push's process group) or a closed terminal
/// (SIGHUP) would kill it part-way. They are answered with how to cancel instead, until the
/// returned guard is dropped.
fn ctrl_c_does_not_cancel(
    reporter: &crate::report::Reporter,
) -> anyhow::Result<crate::cancel::Listening> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen =
        |kind| signal(kind).map_err(|e| anyhow::anyhow!("failed to take over Ctrl-C: {e}"));
    let (mut interrupt, mut hangup) = (
        listen(SignalKind::interrupt())?,
        listen(SignalKind::hangup())?,
    );
    let reporter = reporter.clone();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = interrupt.recv() => reporter.warn(
                    "Ctrl-C does not stop a deploy; it carries on. `deploy cancel` on the host stops it and puts back what it replaced",
                ),
                Some(()) = hangup.recv() => {}
                else => return,
            }
        }
    });
    Ok(crate::cancel::Listening::new(task))
}

/// Settles a deploy that a dead process left half-done, when no deploy runs now: what
/// `status` and `history` show is then what runs, not what was under way when it died. A
/// failure is a warning: the command still shows what it can.
async fn settle(root: &Root) {
    let settled = async {
        let lock = crate::pipeline::lock::try_acquire(&root.lock_file(), "deploy status")?;
        let Some(_lock) = lock else {
            return anyhow::Ok(());
        };
        let settings = crate::settings::Settings::load(root)?;
        let project = settings.project(root)?;
        let reporter = crate::report::Reporter::new().with_terminal();
        let traffic = crate::pipeline::traffic::Traffic::Direct;
        crate::pipeline::reconcile::run(root, &settings, &project, traffic, &reporter).await
    };
    if let Err(e) = settled.await {
        eprintln!("deploy: warning: could not settle an interrupted deploy: {e:#}");
    }
}

/// Prints the error chain once, prefixed like every message of ours.
fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("deploy: {e:#}");
    ExitCode::from(exit::FAILURE)
}

/// `RUST_LOG` drives the tool's own tracing (the daemon's log); deploy output goes through
/// the reporter, not through here.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The daemon's own log: `RUST_LOG` (default `info`) to stderr (the journal under systemd)
/// and to `serve.log` in each of its roots (every root's file gets every line: the proxy and
/// the listeners are shared).
fn init_daemon_tracing(roots: &[Root]) -> Vec<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let mut guards = Vec::new();
    let files: Vec<_> = (roots.iter())
        .map(|root| {
            let (file, guard) = tracing_appender::non_blocking(tracing_appender::rolling::never(
                root.path(),
                "serve.log",
            ));
            guards.push(guard);
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(file)
                .boxed()
        })
        .collect();
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(files)
        .try_init();
    guards
}

/// The one root a command other than `deploy serve` acts on, seen from `--env`'s
/// environment (which must exist): the `--root` given, or the one
/// found from the hook's repo or the current directory.
fn root(roots: Vec<PathBuf>, env: Option<crate::ids::EnvName>) -> anyhow::Result<Root> {
    if roots.len() > 1 {
        anyhow::bail!("only `deploy serve` takes more than one `--root`");
    }
    let root = Root::discover(roots.into_iter().next())?;
    let Some(env) = env else { return Ok(root) };
    let settings = crate::settings::Settings::load_all(&root)?;
    crate::pipeline::environments::check_exists(&root, &settings, &env)?;
    Ok(root.with_env(env))
}

/// Who is deploying, for a deploy asked from this process: the name `DEPLOY_USER`, then
/// gitolite's `GL_USER`, then Gitea/Forgejo's `GITEA_PUSHER_NAME` claim, believed only when
/// this process runs as root or as the owner of `ROOT/code.git`; otherwise its login name.
/// The daemon applies the same rule again to whatever this sends it.
pub(crate) fn pusher(root: &Root) -> Pusher {
    let uid = nix::unistd::geteuid().as_raw();
    identity::pusher(root, identity::claim_from_env().as_deref(), uid)
}
