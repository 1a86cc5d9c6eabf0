//! After a deploy was killed part-way (its process died: a SIGKILL, a crash, a reboot), what
//! runs, the ledger and the work tree are made to tell one story again, before anything
//! else happens. The caller holds the ROOT lock, so every `running` row is a dead one.
//!
//! The rule, the same for a hook's in-process deploy and for the daemon's: **a killed deploy
//! whose new containers all run and prove ready goes live** (the containers they replaced
//! are removed, and its row says `succeeded`); **otherwise what it replaced is put back**
//! (renamed back and started), its own containers are removed, the work tree goes back to
//! the live revision, and its row says `abandoned`.

use std::collections::BTreeSet;
use std::time::Duration;

use super::blocking;
use super::traffic::Traffic;
use crate::docker::{self, Docker, apply, health};
use crate::git;
use crate::ids::{ProjectName, Revision, ServiceName};
use crate::ledger::{Deployment, Ledger, Status};
use crate::plan::{ObservedContainer, names};
use crate::report::Reporter;
use crate::root::Root;
use crate::settings::Settings;

/// The longest a container of a killed deploy is given to prove ready.
const PROVE_WITHIN: Duration = Duration::from_secs(15);

/// What became of a killed deploy.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Its containers were ready: it is live.
    Finished,
    /// What it replaced runs again.
    PutBack,
    /// It had started no container.
    Nothing,
}

/// Settles every deploy a dead process left `running`. Connects to the engine only when
/// there is one.
pub(crate) async fn run(
    root: &Root,
    settings: &Settings,
    project: &ProjectName,
    traffic: Traffic<'_>,
    reporter: &Reporter,
) -> anyhow::Result<()> {
    let ledger = Ledger::open(&root.ledger_file()).await?;
    // A queued deploy whose process is gone never started: nothing to settle.
    for row in ledger.queued().await? {
        if !crate::cancel::runs_deploy(row.pid) {
            let why = "its process ended while it was queued";
            ledger.mark(row.id, Status::Abandoned, Some(why)).await?;
        }
    }
    let dead = ledger.running().await?;
    if dead.is_empty() {
        return Ok(());
    }
    let docker = docker::connect().await?;
    for row in dead {
        let live = ledger.last_succeeded().await?.map(|d| d.revision);
        let at = Place {
            root,
            settings,
            project,
            docker: &docker,
            traffic,
        };
        let settled = settle(&at, &row, live.as_ref()).await?;
        record(&ledger, &row, &settled, reporter).await?;
    }
    Ok(())
}

async fn record(
    ledger: &Ledger,
    row: &Deployment,
    settled: &Settled,
    reporter: &Reporter,
) -> anyhow::Result<()> {
    let (id, rev) = (row.id, row.revision.short());
    match settled {
        Settled::Finished => {
            ledger.finish(id, Status::Succeeded, &[], None).await?;
            reporter.warn(format!(
                "deploy {id} of {rev} was interrupted after its containers were ready; it is live now"
            ));
        }
        Settled::PutBack | Settled::Nothing => {
            let why = match settled {
                Settled::PutBack => "the deploying process died; what it replaced was put back",
                _ => "the deploying process died",
            };
            ledger.mark(id, Status::Abandoned, Some(why)).await?;
            reporter.warn(format!(
                "deploy {id} of {rev} was interrupted; marked abandoned, and what it replaced runs again"
            ));
        }
    }
    Ok(())
}

/// Where a killed deploy is settled.
struct Place<'a> {
    root: &'a Root,
    settings: &'a Settings,
    project: &'a ProjectName,
    docker: &'a Docker,
    traffic: Traffic<'a>,
}

/// Applies the rule to the containers of the killed deploy of `row`.
async fn settle(
    at: &Place<'_>,
    row: &Deployment,
    live: Option<&Revision>,
) -> anyhow::Result<Settled> {
    let Place {
        root,
        settings,
        docker,
        ..
    } = *at;
    let all = docker::observe::containers(docker, at.project).await?;
    let revision = row.revision.to_string();
    // Containers labelled with a revision that is also live are not told apart from the
    // live ones: the next deploy's plan sorts them out (leftovers).
    let ours: Vec<&ObservedContainer> = all
        .iter()
        .filter(|c| c.revision.as_deref() == Some(revision.as_str()))
        .filter(|_| live != Some(&row.revision))
        .collect();
    if ours.is_empty() {
        put_work_tree_back(root, live).await;
        return Ok(Settled::Nothing);
    }
    // Each of ours replaces the container of its service and replica; the other replicas
    // of those services, which the killed deploy had not reached, serve on either way.
    let slot = |c: &ObservedContainer| c.service.clone().map(|s| (s, c.replica));
    let slots: BTreeSet<(ServiceName, u32)> = ours.iter().filter_map(|c| slot(c)).collect();
    let services: BTreeSet<&ServiceName> = slots.iter().map(|(s, _)| s).collect();
    let others = || all.iter().filter(|c| !ours.iter().any(|o| o.id == c.id));
    let replaced: Vec<&ObservedContainer> = others()
        .filter(|c| slot(c).is_some_and(|s| slots.contains(&s)))
        .collect();
    let untouched = others().filter(|c| {
        c.running
            && slot(c).is_some_and(|s| !slots.contains(&s))
            && c.service.as_ref().is_some_and(|s| services.contains(s))
    });
    if all_ready(docker, settings, &ours).await {
        let serving: Vec<&ObservedContainer> = ours.iter().copied().chain(untouched).collect();
        switch(at, &serving, &replaced).await?;
        for c in replaced {
            apply::remove(docker, &c.id, &c.name).await?;
        }
        return Ok(Settled::Finished);
    }
    let serving: Vec<&ObservedContainer> = replaced.iter().copied().chain(untouched).collect();
    switch(at, &serving, &ours).await?;
    for c in ours {
        apply::remove(docker, &c.id, &c.name).await?;
    }
    for c in replaced {
        if let Some(name) = c.name.strip_suffix(names::PARKED_SUFFIX) {
            apply::rename(docker, &c.id, name).await?;
        }
        if !c.running {
            apply::start(docker, &c.id, &c.name).await?;
        }
    }
    put_work_tree_back(root, live).await;
    Ok(Settled::PutBack)
}

/// Behind `deploy serve`, points the proxy at `to` and lets `from` finish what it serves,
/// before `from` is removed.
async fn switch(
    at: &Place<'_>,
    to: &[&ObservedContainer],
    from: &[&ObservedContainer],
) -> anyhow::Result<()> {
    let Traffic::Proxied(switch) = at.traffic else {
        return Ok(());
    };
    let mut routes = Vec::new();
    for c in to.iter().filter(|c| c.running) {
        routes.extend(docker::routes::of_container(at.docker, &c.id).await?);
    }
    if routes.is_empty() {
        return Ok(());
    }
    switch.switch(routes).await?;
    let mut old = Vec::new();
    for c in from {
        old.extend(
            docker::routes::of_container(at.docker, &c.id)
                .await?
                .into_iter()
                .map(|r| r.backend),
        );
    }
    switch.drain(old).await;
    Ok(())
}

/// Whether every container runs and passes the readiness check a deploy would have made
/// (a one-shot job: has exited 0).
async fn all_ready(
    docker: &Docker,
    settings: &Settings,
    containers: &[&ObservedContainer],
) -> bool {
    let within = settings.health_timeout.min(PROVE_WITHIN);
    for c in containers {
        let path = settings.health_path.as_deref();
        if !health::proves_ready(docker, &c.id, path, within).await {
            return false;
        }
    }
    true
}

/// The work tree as the live revision has it: a killed deploy may have checked out its own.
async fn put_work_tree_back(root: &Root, live: Option<&Revision>) {
    let Some(live) = live.cloned() else { return };
    let (repo, code) = (root.repo(), root.code());
    let _ = blocking(move || git::checkout(&repo, &code, &live, u64::MAX)).await;
}
