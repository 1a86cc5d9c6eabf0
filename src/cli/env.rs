//! `deploy env create|list|destroy`: the environments of ROOT (`environments:` and
//! `previews:` in deploy.yml; `pipeline/environments.rs` makes and removes them).

use anyhow::bail;
use serde::Serialize;

use crate::ids::EnvName;
use crate::ledger::Ledger;
use crate::pipeline::environments::{self, Environment};
use crate::pipeline::lock;
use crate::report::Reporter;
use crate::root::Root;
use crate::settings::Settings;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Make an environment's folder (ROOT/envs/NAME: code/.secrets, db-data, build-logs)
    /// ahead of its first push, so that its secrets can go in first.
    Create { name: EnvName },
    /// Each environment: its branch, live revision, who deployed it, its hostnames, and
    /// when a preview expires.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Tear an environment down: its containers, networks, volumes, images, work tree,
    /// data, dumps and secrets. Its ledger rows and build logs stay.
    Destroy {
        name: EnvName,
        /// Also for an environment that deploy.yml names (its next push makes it again).
        #[arg(long)]
        force: bool,
    },
}

pub(crate) async fn run(root: Root, command: Command) -> anyhow::Result<u8> {
    let settings = Settings::load_all(&root)?;
    match command {
        Command::Create { name } => create(&root, &settings, name),
        Command::List { json } => list(&root, &settings, json).await,
        Command::Destroy { name, force } => destroy(&root, &settings, name, force).await,
    }
}

fn create(root: &Root, settings: &Settings, name: EnvName) -> anyhow::Result<u8> {
    if name.is_production() {
        bail!("`production` lives in ROOT itself, which `deploy init` made");
    }
    if !settings.environments.contains_key(&name) {
        bail!(
            "`{name}` is not in `environments` of `{}`; name it there first (a preview is made by its first push)",
            root.settings_file().display()
        );
    }
    let env = root.with_env(name);
    environments::create(&env)?;
    println!(
        "made `{}`; put the environment's secrets in `{}` before its first push",
        env.dir().display(),
        env.secrets().display()
    );
    Ok(super::exit::SUCCESS)
}

/// One line of `deploy env list`, and its JSON.
#[derive(Serialize)]
struct Listed {
    name: String,
    branch: String,
    preview: bool,
    revision: Option<String>,
    deployed_by: Option<String>,
    deployed_at: Option<chrono::DateTime<chrono::Utc>>,
    hostnames: Vec<String>,
    expires: Option<chrono::DateTime<chrono::Utc>>,
}

async fn list(root: &Root, settings: &Settings, json: bool) -> anyhow::Result<u8> {
    let mut rows = Vec::new();
    for Environment {
        name,
        branch,
        preview,
        expires,
    } in environments::all(root, settings)
    {
        let env = root.with_env(name.clone());
        let live = match env.ledger_file().is_file() {
            true => {
                Ledger::open(&env.ledger_file())
                    .await?
                    .last_succeeded()
                    .await?
            }
            false => None,
        };
        rows.push(Listed {
            name: name.to_string(),
            branch,
            preview,
            revision: live.as_ref().map(|d| d.revision.to_string()),
            deployed_by: live.as_ref().map(|d| d.user.clone()),
            deployed_at: live.as_ref().map(|d| d.started_at),
            hostnames: settings.clone().for_env(&env).hostnames,
            expires,
        });
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(super::exit::SUCCESS);
    }
    println!(
        "{:<24} {:<24} {:<12} {:<16} {:<20} HOSTNAMES",
        "ENVIRONMENT", "BRANCH", "REVISION", "DEPLOYED BY", "EXPIRES"
    );
    for r in rows {
        let short = |s: &str| s.chars().take(12).collect::<String>();
        println!(
            "{:<24} {:<24} {:<12} {:<16} {:<20} {}",
            r.name,
            r.branch,
            r.revision
                .as_deref()
                .map(short)
                .unwrap_or_else(|| "-".into()),
            r.deployed_by.as_deref().unwrap_or("-"),
            r.expires
                .map(|e| e
                    .with_timezone(&chrono::Local)
                    .format("%Y-%m-%d %H:%M")
                    .to_string())
                .unwrap_or_else(|| "-".into()),
            r.hostnames.join(", ")
        );
    }
    Ok(super::exit::SUCCESS)
}

async fn destroy(
    root: &Root,
    settings: &Settings,
    name: EnvName,
    force: bool,
) -> anyhow::Result<u8> {
    if name.is_production() {
        bail!(
            "`production` is never destroyed; `deploy down --delete-volumes` stops it and removes its volumes"
        );
    }
    if settings.environments.contains_key(&name) && !force {
        bail!(
            "`{name}` is named in `environments` of `{}`: add `--force` to destroy it and its data",
            root.settings_file().display()
        );
    }
    environments::check_exists(root, settings, &name)?;
    let reporter = Reporter::new().with_terminal().with_tracing();
    let holder = format!("`deploy env destroy {name}` (pid {})", std::process::id());
    let _lock = lock::acquire(&root.lock_file(), &holder, &reporter).await?;
    let by = super::pusher(root).name.to_string();
    let env = root.with_env(name);
    environments::teardown(&env, &by, "`deploy env destroy`", &reporter).await?;
    crate::serve::client::refresh(&env, &reporter).await?;
    Ok(super::exit::SUCCESS)
}
