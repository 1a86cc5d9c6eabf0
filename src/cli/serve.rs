//! `deploy serve [--root ROOT]…`: run the daemon for the host's deploy roots (see the
//! README).

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
    /// Replace the running daemon with the program installed now, handing over every
    /// socket, so no connection is refused (the same as SIGHUP to it); returns once the new
    /// daemon serves. The old one first finishes the deploys it runs and has queued.
    #[arg(long)]
    pub(crate) upgrade: bool,
}

pub(crate) async fn run(roots: Vec<Root>, args: Args) -> anyhow::Result<u8> {
    if args.upgrade {
        let root = roots[0].path().to_path_buf();
        let (old, new) =
            tokio::task::spawn_blocking(move || crate::serve::upgrade::request(&root)).await??;
        println!("deploy serve upgraded: pid {old} handed over to pid {new}");
        return Ok(super::exit::SUCCESS);
    }
    let mut config = ServeConfig::load()?;
    config.set(args.http.as_deref(), args.https.as_deref(), args.certs)?;
    crate::serve::run(roots, config).await?;
    Ok(super::exit::SUCCESS)
}

/// The roots to serve: those given with `--root` (or `DEPLOY_ROOT`); else those `deploy
/// init` registered on this host; else the one found from the current directory.
pub(crate) fn roots(given: Vec<PathBuf>) -> anyhow::Result<Vec<Root>> {
    if !given.is_empty() {
        let mut roots: Vec<Root> = Vec::new();
        for path in given {
            let root = Root::discover(Some(path))?;
            if !roots.iter().any(|r| r.path() == root.path()) {
                roots.push(root);
            }
        }
        return Ok(roots);
    }
    let registered = crate::serve::registry::registered(&ServeConfig::load()?.roots);
    if !registered.is_empty() {
        return Ok(registered);
    }
    Ok(vec![Root::discover(None)?])
}
