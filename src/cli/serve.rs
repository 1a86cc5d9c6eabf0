//! `deploy serve --root ROOT`: run the daemon for one deploy root (see the README).

use crate::root::Root;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) async fn run(root: Root, _args: Args) -> anyhow::Result<u8> {
    crate::serve::run(root).await?;
    Ok(super::exit::SUCCESS)
}
