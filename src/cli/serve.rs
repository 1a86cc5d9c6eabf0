//! `deploy serve --root ROOT`: run the daemon for one deploy root (see the README).

use std::path::PathBuf;

use crate::root::Root;
use crate::serve::config::ServeConfig;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to serve plain HTTP for the hostnames of deploy.yml (`:80`, `127.0.0.1:8080`).
    /// Default: `http` in /etc/deploy/serve.yml, else `:80`.
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Where to serve HTTPS for those hostnames. Default: `https` in
    /// /etc/deploy/serve.yml, else `:443`.
    #[arg(long, value_name = "ADDR")]
    https: Option<String>,
    /// The certificates directory: `<hostname>.pem` (key and chain), or
    /// `_wildcard.<domain>.pem`. Default: `certs` in /etc/deploy/serve.yml, else
    /// /etc/deploy/certs.
    #[arg(long, value_name = "DIR")]
    certs: Option<PathBuf>,
}

pub(crate) async fn run(root: Root, args: Args) -> anyhow::Result<u8> {
    let mut config = ServeConfig::load()?;
    config.set(args.http.as_deref(), args.https.as_deref(), args.certs)?;
    crate::serve::run(root, config).await?;
    Ok(super::exit::SUCCESS)
}
