//! `deploy [--revision REV]`: deploy the branch tip, or roll back or forward to REV.

use crate::ledger::{Ledger, Trigger};
use crate::pipeline::{self, Request, Target};
use crate::report::Reporter;
use crate::root::Root;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// What to deploy: a full or short sha, a tag, a branch or `main~1`. Defaults to the tip
    /// of the deploy branch. An image built earlier for it is reused without a build.
    #[arg(long, short = 'r', value_name = "REV")]
    revision: Option<String>,
    /// With --revision: also put the databases back as they were before the release that
    /// followed REV (the dumps taken then), so code and data both return to REV's.
    #[arg(long, requires = "revision")]
    restore_db: bool,
}

impl Args {
    /// Whether any of these flags was given.
    pub(crate) fn given(&self) -> bool {
        self.revision.is_some() || self.restore_db
    }
}

pub(crate) async fn run(root: Root, args: Args) -> anyhow::Result<u8> {
    let reporter = Reporter::new().with_terminal().with_tracing();
    let trigger = if was_deployed(&root, args.revision.as_deref()).await {
        Trigger::Rollback
    } else {
        Trigger::Manual
    };
    let restore = match (&args.revision, args.restore_db) {
        (Some(rev), true) => super::restore::for_revision(&root, rev).await?,
        _ => Default::default(),
    };
    let pusher = super::pusher(&root);
    let request = Request {
        target: Target::Expression(args.revision),
        user: pusher.name,
        uid: pusher.uid,
        restore,
        trigger,
        queued: None,
        env: root.env().clone(),
    };
    super::run_deploy(&root, request, &reporter).await?;
    Ok(super::exit::SUCCESS)
}

/// A revision counts as a rollback target when it was deployed successfully before.
async fn was_deployed(root: &Root, expr: Option<&str>) -> bool {
    let Some(expr) = expr else { return false };
    let repo = root.repo();
    let expr = expr.to_owned();
    let Ok(settings) = crate::settings::Settings::load(root) else {
        return false;
    };
    let resolved =
        pipeline::blocking(move || crate::git::resolve(&repo, &expr, &settings.branch)).await;
    let Ok(Ok(revision)) = resolved else {
        return false;
    };
    let Ok(ledger) = Ledger::open(&root.ledger_file()).await else {
        return false;
    };
    ledger
        .succeeded_revisions(u32::MAX)
        .await
        .is_ok_and(|revs| revs.contains(&revision))
}
