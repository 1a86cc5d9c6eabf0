//! `deploy hook`: what the post-receive hook runs. Reads git's ref updates on stdin and
//! deploys each branch that moved to its environment (a named one, or a preview); a
//! preview's branch deleted tears the preview down.

use std::io::Read;

use anyhow::Context;

use crate::git::hook::{RefUpdate, parse_hook_input};
use crate::ids::{EnvName, Revision};
use crate::ledger::Trigger;
use crate::pipeline::environments;
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
    let settings = Settings::load_all(&root)?;
    let reporter = Reporter::new().with_terminal().with_tracing();
    let decisions: Vec<Decision> = updates.iter().map(|u| decide(u, &settings)).collect();
    // A preview this push deploys lives on, whatever its age.
    let pushed: Vec<EnvName> = (decisions.iter())
        .filter_map(|d| match d {
            Decision::Deploy(env, _) => Some(env.clone()),
            _ => None,
        })
        .collect();
    match environments::sweep(&root, &pushed, &reporter).await {
        Ok(gone) => refresh_after(&root, &gone, &reporter).await,
        Err(e) => reporter.warn(format!("previews past their ttl: {e:#}")),
    }

    let pusher = super::pusher(&root);
    // Each branch of the push is deployed, whichever failed before it.
    let mut failed: Vec<anyhow::Error> = Vec::new();
    for (update, decision) in updates.iter().zip(decisions) {
        let (env, revision) = match decision {
            Decision::Deploy(env, revision) => (env, revision),
            Decision::TearDown(env, branch) => {
                let by = pusher.name.to_string();
                if let Err(e) = tear_down(&root.with_env(env), &branch, &by, &reporter).await {
                    failed.push(e);
                }
                continue;
            }
            Decision::Skip(why) => {
                reporter.info(format!("not deployed: {why}"));
                continue;
            }
        };
        let request = Request {
            target: Target::Pushed {
                revision,
                refname: update.refname.clone(),
            },
            user: pusher.name.clone(),
            uid: pusher.uid,
            restore: Default::default(),
            trigger: Trigger::Push,
            queued: None,
            env: env.clone(),
        };
        let view = root.with_env(env);
        match super::run_deploy(&view, request, &reporter).await {
            Ok(()) => say_where(&view, &reporter),
            Err(e) => failed.push(e),
        }
    }
    // The last failure is the command's; the ones before it are said here.
    let last = failed.pop();
    for e in failed {
        reporter.error(format!("{e:#}"));
    }
    match last {
        Some(e) => Err(e),
        None => Ok(super::exit::SUCCESS),
    }
}

/// The environment a deploy reached, and where it answers.
fn say_where(env: &Root, reporter: &Reporter) {
    let hosts = Settings::load(env).map(|s| s.hostnames).unwrap_or_default();
    let urls = crate::serve::urls(env, &hosts);
    match urls.is_empty() {
        true => reporter.info(format!("environment {} is live", env.env())),
        false => reporter.info(format!(
            "environment {} is live at {}",
            env.env(),
            urls.join(" ")
        )),
    }
}

/// A preview's branch was deleted: the preview goes, under the ROOT lock.
async fn tear_down(env: &Root, branch: &str, by: &str, reporter: &Reporter) -> anyhow::Result<()> {
    if environments::preview_of(env).as_deref() != Some(branch) {
        reporter.info(format!(
            "no preview of `{branch}` runs; nothing to tear down"
        ));
        return Ok(());
    }
    let holder = format!("the teardown of {} (pid {})", env.env(), std::process::id());
    let lock = crate::pipeline::lock::acquire(&env.lock_file(), &holder, reporter).await?;
    environments::teardown(env, by, "its branch was deleted", reporter).await?;
    drop(lock);
    crate::serve::client::refresh(env, reporter).await
}

/// A daemon still routes to the previews just torn down.
async fn refresh_after(root: &Root, gone: &[EnvName], reporter: &Reporter) {
    if gone.is_empty() {
        return;
    }
    if let Err(e) = crate::serve::client::refresh(root, reporter).await {
        reporter.warn(format!("{e:#}"));
    }
}

enum Decision {
    Deploy(EnvName, Revision),
    TearDown(EnvName, String),
    Skip(String),
}

fn decide(update: &RefUpdate, settings: &Settings) -> Decision {
    let Some(branch) = update.branch() else {
        return Decision::Skip(format!("`{}` is not a branch", update.refname));
    };
    let Some((env, preview)) = settings.env_of_branch(branch) else {
        let named: Vec<String> = (settings.named_environments().into_iter())
            .map(|(_, b)| format!("`{b}`"))
            .collect();
        return Decision::Skip(format!(
            "`{branch}` is not a deploy branch ({}{})",
            named.join(", "),
            if settings.previews.is_some() {
                ", or a preview's"
            } else {
                ""
            }
        ));
    };
    match (update.is_delete(), preview) {
        (true, true) => Decision::TearDown(env, branch.to_owned()),
        (true, false) => Decision::Skip(format!(
            "the deploy branch `{branch}` was deleted; what runs keeps running"
        )),
        (false, _) => match Revision::parse(&update.new) {
            Ok(rev) => Decision::Deploy(env, rev),
            Err(e) => Decision::Skip(e.to_string()),
        },
    }
}
