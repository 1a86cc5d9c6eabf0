//! `deploy down`: stop the stack and remove its containers and networks. Data stays: volumes
//! and `db-data` survive unless volumes are named by an explicit flag.

use crate::docker;
use crate::pipeline::lock;
use crate::report::Reporter;
use crate::root::Root;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Also delete the project's named volumes, and their data with them. Never touches
    /// `db-data/` or other host directories, nor external volumes.
    #[arg(long)]
    delete_volumes: bool,
}

pub(crate) async fn run(root: Root, args: Args) -> anyhow::Result<u8> {
    let settings = Settings::load(&root)?;
    let project = settings.project(&root)?;
    let reporter = Reporter::new().with_terminal().with_tracing();
    let holder = format!("`deploy down` (pid {})", std::process::id());
    let _lock = lock::acquire(&root.lock_file(), &holder, &reporter).await?;
    let docker = docker::connect().await?;
    let volumes = if args.delete_volumes {
        docker::down::Volumes::Delete
    } else {
        docker::down::Volumes::Keep
    };
    docker::down::down(&docker, &project, volumes, &reporter).await?;
    // A running daemon's proxy still points at the containers just removed.
    crate::serve::client::refresh(&root, &reporter).await?;
    if !args.delete_volumes {
        reporter.info(
            "data kept: volumes and db-data are untouched; `deploy` brings the stack back"
                .to_owned(),
        );
    }
    Ok(super::exit::SUCCESS)
}
