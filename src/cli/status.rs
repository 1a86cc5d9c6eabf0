//! `deploy status`: the live revision, who deployed it and when, and each container.

use serde::Serialize;

use crate::docker;
use crate::ledger::{Deployment, Ledger};
use crate::root::Root;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Status {
    /// `deploy`'s own version and commit.
    version: &'static str,
    project: String,
    live: Option<Deployment>,
    containers: Vec<docker::status::ContainerStatus>,
    build_cache: BuildCache,
}

/// BuildKit's cache, which the engine shares among every project it builds.
#[derive(Serialize)]
struct BuildCache {
    /// Bytes it holds now; `null` when the engine could not tell (it answers one disk usage
    /// question at a time).
    size: Option<u64>,
    /// `build_cache` in deploy.yml: what a deploy prunes it down to.
    limit: u64,
}

pub(crate) async fn run(root: Root, args: Args) -> anyhow::Result<u8> {
    super::settle(&root).await;
    let settings = Settings::load(&root)?;
    let project = settings.project(&root)?;
    let ledger = Ledger::open(&root.ledger_file()).await?;
    let live = ledger.last_succeeded().await?;
    let docker = docker::connect().await?;
    let containers = docker::status::containers(&docker, &project).await?;
    let status = Status {
        version: super::VERSION,
        project: project.to_string(),
        live,
        containers,
        build_cache: BuildCache {
            // What runs matters more than the cache's size: a busy engine does not fail
            // `deploy status`.
            size: docker::cache::usage(&docker).await.ok(),
            limit: settings.build_cache,
        },
    };

    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(super::exit::SUCCESS);
    }
    println!("project  {}", status.project);
    match &status.live {
        Some(d) => println!(
            "live     {} deployed by {} at {}",
            d.revision,
            d.user,
            d.finished_at
                .unwrap_or(d.started_at)
                .with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S")
        ),
        None => println!("live     nothing deployed yet"),
    }
    let human = crate::compose::bytes::human;
    println!(
        "build    cache {} of at most {} (shared by every project on this engine)",
        status.build_cache.size.map_or("unknown".to_owned(), human),
        human(status.build_cache.limit)
    );
    if status.containers.is_empty() {
        println!("no containers");
    }
    let live = status.live.as_ref().map(|d| d.revision.to_string());
    for c in &status.containers {
        // Docker's first healthcheck may be minutes away; what `deploy status` checked itself
        // says so.
        let health = match (c.health.as_deref(), c.health_from) {
            (Some(h), Some("deploy")) => format!("{h}*"),
            (Some(h), _) => h.to_owned(),
            (None, _) => "-".to_owned(),
        };
        // A container a later revision kept (nothing it is made from changed) carries the
        // revision that created it, as its label says.
        let short = c.revision.get(..12).unwrap_or(&c.revision);
        let revision = match &live {
            Some(live) if !c.revision.is_empty() && *live != c.revision => {
                format!("unchanged since {short}")
            }
            _ => short.to_owned(),
        };
        println!(
            "  {:<12} {:<36} {:<10} {:<10} {revision}",
            c.service, c.name, c.state, health,
        );
    }
    if status
        .containers
        .iter()
        .any(|c| c.health_from == Some("deploy"))
    {
        println!("* Docker has not run its first healthcheck yet; `deploy status` ran it now");
    }
    Ok(super::exit::SUCCESS)
}
