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
    project: String,
    live: Option<Deployment>,
    containers: Vec<docker::status::ContainerStatus>,
}

pub(crate) async fn run(root: Root, args: Args) -> anyhow::Result<u8> {
    let settings = Settings::load(&root)?;
    let project = settings.project(&root)?;
    let ledger = Ledger::open(&root.ledger_file()).await?;
    let live = ledger.last_succeeded().await?;
    let docker = docker::connect().await?;
    let containers = docker::status::containers(&docker, &project).await?;
    let status = Status {
        project: project.to_string(),
        live,
        containers,
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
    if status.containers.is_empty() {
        println!("no containers");
    }
    for c in &status.containers {
        println!(
            "  {:<12} {:<36} {:<10} {:<10} {}",
            c.service,
            c.name,
            c.state,
            c.health.as_deref().unwrap_or("-"),
            c.revision.get(..12).unwrap_or(&c.revision)
        );
    }
    Ok(super::exit::SUCCESS)
}
