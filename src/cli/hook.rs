//! `deploy hook`: what the post-receive hook runs. Reads git's ref updates on stdin and
//! deploys when the deploy branch moved.

use std::io::Read;

use anyhow::Context;

use crate::git::hook::{RefUpdate, parse_hook_input};
use crate::ids::Revision;
use crate::ledger::Trigger;
use crate::pipeline::{Request, Target};
use crate::report::Reporter;
use crate::root::Root;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) async fn run(root: Root, _args: Args) -> anyhow::Result<u8> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("failed to read the ref updates from git")?;
    let updates = parse_hook_input(&input)?;
    let settings = Settings::load(&root)?;
    let reporter = Reporter::new().with_terminal().with_tracing();

    let mut deploy = None;
    for update in &updates {
        match decide(update, &settings.branch) {
            Decision::Deploy(revision) => deploy = Some((revision, update.refname.clone())),
            Decision::Skip(why) => reporter.info(format!("not deployed: {why}")),
        }
    }
    let Some((revision, refname)) = deploy else {
        return Ok(super::exit::SUCCESS);
    };
    let pusher = super::pusher(&root);
    let request = Request {
        target: Target::Pushed { revision, refname },
        user: pusher.name,
        uid: pusher.uid,
        restore: Default::default(),
        trigger: Trigger::Push,
        queued: None,
    };
    super::run_deploy(&root, request, &reporter).await?;
    Ok(super::exit::SUCCESS)
}

enum Decision {
    Deploy(Revision),
    Skip(String),
}

fn decide(update: &RefUpdate, branch: &str) -> Decision {
    match update.branch() {
        Some(b) if b == branch && update.is_delete() => Decision::Skip(format!(
            "the deploy branch `{b}` was deleted; what runs keeps running"
        )),
        Some(b) if b == branch => match Revision::parse(&update.new) {
            Ok(rev) => Decision::Deploy(rev),
            Err(e) => Decision::Skip(e.to_string()),
        },
        Some(b) => Decision::Skip(format!("`{b}` is not the deploy branch `{branch}`")),
        None => Decision::Skip(format!("`{}` is not a branch", update.refname)),
    }
}
