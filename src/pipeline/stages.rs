//! The stages of a deploy once its ledger row is open, in order, each with one job, all
//! sharing one `Run`. Any error ends the deploy; `record::Record::close` then does the
//! bookkeeping, so no stage needs to.
//!
//! A cancel (`Run::cancel`) is checked between stages and raced by their waits; what it
//! interrupts fails as any stage fails, so `apply`'s undo puts back what was replaced. An
//! environment is decided before `lock` and travels in `Run`.

use std::collections::BTreeMap;

use sha2::Digest;

use super::load::{load_spec, work_tree_sources};
use super::record::Record;
use super::traffic::{self, Traffic};
use super::{blocking, confine, preflight, release};
use crate::cancel::Cancel;
use crate::compose::Spec;
use crate::docker::build::BuildSecrets;
use crate::docker::{self, Docker, apply};
use crate::git;
use crate::ids::{ProjectName, Revision, ServiceName};
use crate::ledger::Trigger;
use crate::plan::{self, Plan, PlanOptions};
use crate::report::{Reporter, StepKind};
use crate::root::Root;
use crate::settings::Settings;

/// What every stage of one deploy shares.
pub(crate) struct Run<'a> {
    pub(crate) root: &'a Root,
    pub(crate) settings: &'a Settings,
    pub(crate) project: &'a ProjectName,
    pub(crate) revision: &'a Revision,
    pub(crate) trigger: Trigger,
    pub(crate) traffic: Traffic<'a>,
    pub(crate) reporter: &'a Reporter,
    pub(crate) docker: Docker,
    /// The deploy's ledger row, and what was live before it.
    pub(crate) record: &'a Record,
    /// Dumps to restore (service → file name in `ROOT/backups`) before the release phase.
    pub(crate) restore: &'a BTreeMap<String, String>,
    /// Trips when `deploy cancel` asks; checked between stages and raced by their waits.
    pub(crate) cancel: &'a Cancel,
}

/// Checks out, loads and checks the compose file, plans, builds every image, starts the new
/// containers health-gated (the release phase between the services it needs and the rest),
/// and switches traffic to them. Returns the deployed images.
pub(crate) async fn run(run: &Run<'_>) -> anyhow::Result<Vec<String>> {
    // A full disk breaks what runs too: refuse before touching anything.
    preflight::free_space(&run.docker, run.settings, run.reporter).await?;
    run.enter("checkout").await?;
    checkout(run).await?;
    run.enter("read compose file").await?;
    let (spec, secrets) = load(run).await?;
    run.enter("plan").await?;
    let plan = plan(run, &spec).await?;
    run.enter("build").await?;
    build(run, &plan, &secrets).await?;
    run.enter("start").await?;
    let phase = release::prepare(run, &spec, &plan).await?;
    let options = apply_options(run);
    let mut applying = apply::begin(&run.docker, &plan, run.reporter, &options).await?;
    let mut done = release::Done::default();
    let applied = async {
        let first = |s: &ServiceName| phase.first.contains(s);
        applying.services(&plan, first).await?;
        done = phase.run(run, &plan, &mut applying).await?;
        applying.services(&plan, |s| !first(s)).await?;
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = applied {
        applying.rollback().await;
        return Err(released_then_failed(run, &done, e));
    }
    if let Err(canceled) = run.cancel.check() {
        applying.rollback().await;
        return Err(released_then_failed(run, &done, canceled.into()));
    }
    run.enter("switch").await?;
    let applied = applying.finish();
    traffic::cut_over(run.traffic, &run.docker, &plan, applied, run.reporter)
        .await
        .map_err(|e| released_then_failed(run, &done, e))?;
    Ok(plan.images())
}

impl Run<'_> {
    /// Moves on to the next stage, unless the deploy was canceled: the stage goes to the
    /// ledger, where `deploy status` reads it (a failure to record it is only a warning).
    pub(super) async fn enter(&self, stage: &str) -> anyhow::Result<()> {
        self.cancel.check()?;
        if let Err(e) = self.record.ledger.set_stage(self.record.id, stage).await {
            self.reporter.warn(format!("{e:#}"));
        }
        Ok(())
    }
}

/// A deploy that fails after its release command ran puts the old containers back, but not
/// the old database: says so, loudly, with the command that restores the dump taken before.
fn released_then_failed(run: &Run<'_>, done: &release::Done, e: anyhow::Error) -> anyhow::Error {
    if !done.released {
        return e;
    }
    let undo = match done.dumps.as_slice() {
        [] => "no dump was taken before it (`backups: never`, or no PostgreSQL service)".to_owned(),
        files => {
            let root = shlex::try_quote(&run.root.path().to_string_lossy())
                .map(|q| q.into_owned())
                .unwrap_or_default();
            let quoted: Vec<String> = files
                .iter()
                .map(|f| {
                    shlex::try_quote(f)
                        .map(|q| q.into_owned())
                        .unwrap_or_default()
                })
                .collect();
            format!(
                "to put the database back as it was before the release, run: deploy --root {root} restore-db {}",
                quoted.join(" ")
            )
        }
    };
    run.reporter.error(format!(
        "THE RELEASE COMMAND RAN AND MAY HAVE CHANGED THE DATABASE: the previous code is running again, on the database as the release left it; {undo}"
    ));
    e
}

async fn checkout(run: &Run<'_>) -> anyhow::Result<()> {
    let step = run.reporter.step(StepKind::Checkout);
    let (repo, code, rev) = (run.root.repo(), run.root.code(), run.revision.clone());
    let limit = run.settings.blob_size_limit;
    blocking(move || git::checkout(&repo, &code, &rev, limit)).await??;
    step.finish();
    Ok(())
}

/// The compose file as a deploy runs it: loaded, judged by the policy, its files read and
/// the ones its mounts need written; and the values of the secrets its builds read.
async fn load(run: &Run<'_>) -> anyhow::Result<(Spec, BuildSecrets)> {
    let step = run.reporter.step(StepKind::ReadCompose);
    let loaded = {
        let (root, settings) = (run.root.clone(), run.settings.clone());
        let (project, reporter) = (run.project.clone(), run.reporter.clone());
        blocking(move || {
            let sources = work_tree_sources(&root, &settings)?;
            load_spec(&root, &settings, &project, &sources, &reporter)
        })
        .await??
    };
    let checked = preflight::check(
        run.root,
        run.settings,
        run.project,
        loaded,
        &run.docker,
        run.reporter,
    )
    .await?;
    let root = run.root.clone();
    let prepared = blocking(move || preflight::prepare(&root, checked)).await??;
    step.finish();
    Ok(prepared)
}

async fn plan(run: &Run<'_>, spec: &Spec) -> anyhow::Result<Plan> {
    let step = run.reporter.step(StepKind::Plan);
    let build_keys = build_keys(run, spec).await?;
    let mut tags = Vec::new();
    for (name, s) in spec.services.iter().filter(|(_, s)| s.build.is_some()) {
        let repo = plan::names::image_repo(run.project, name, s.image.as_deref());
        tags.push(plan::names::revision_tag(&repo, run.revision));
        if let Some(key) = build_keys.get(name) {
            tags.push(plan::names::build_tag(&repo, key));
        }
    }
    let observed = docker::observe::observe(&run.docker, run.project, &tags).await?;
    let options = PlanOptions {
        config_dir: run.root.configs(),
        publish: run.traffic.publish(),
        build_keys,
        hosts: host_route(run.settings),
    };
    let mut plan = plan::plan(spec, run.project, run.revision, &observed, &options)?;
    for step in &mut plan.services {
        let c = &mut step.container;
        if !c.env.iter().any(|e| e.starts_with("DEPLOY_ENV=")) {
            c.deploy_env = Some(format!("DEPLOY_ENV={}", run.root.env()));
        }
    }
    run.reporter.plan(plan.rows());
    if options.hosts.is_some() && options.publish == plan::container::Publish::Direct {
        run.reporter.warn(
            "`hostnames` are served by `deploy serve`, which does not run for this root: start it (`deploy init ROOT --serve`) and they are routed without a deploy",
        );
    }
    step.finish();
    if run.trigger == Trigger::Rollback && !plan.builds.is_empty() {
        run.reporter.info(format!(
            "the image of {} was removed by retention; rebuilding it from git",
            run.revision.short()
        ));
    }
    Ok(plan)
}

/// `hostnames:` and `route:` of deploy.yml, for the plan to resolve.
fn host_route(settings: &crate::settings::Settings) -> Option<plan::container::HostRoute> {
    if settings.hostnames.is_empty() {
        return None;
    }
    Some(plan::container::HostRoute {
        service: settings.route.service.clone(),
        port: settings.route.port,
        hostnames: settings.hostnames.clone(),
        https_redirect: settings.https_redirect,
    })
}

/// For each built service whose context is tracked in git: a key of the context's tree
/// and the build's settings. Untracked files in `ROOT/code` are not part of it; a context
/// that is not in git gets no key (and is always built).
async fn build_keys(run: &Run<'_>, spec: &Spec) -> anyhow::Result<BTreeMap<ServiceName, String>> {
    // Contexts are real paths (the policy resolved them), so the work tree is too.
    let code = confine::resolve(&run.root.code());
    let mut keys = BTreeMap::new();
    for (name, svc) in &spec.services {
        let Some(build) = &svc.build else { continue };
        let Ok(relative) = build.context.strip_prefix(&code) else {
            continue;
        };
        let (repo, rev, relative) = (
            run.root.repo(),
            run.revision.clone(),
            relative.to_path_buf(),
        );
        let Some(tree) = blocking(move || git::tree_id(&repo, &rev, &relative)).await?? else {
            continue;
        };
        let mut recipe = serde_json::json!({
            "tree": tree,
            "dockerfile": build.dockerfile,
            "args": build.args,
            "target": build.target,
            "labels": build.labels,
            "network": build.network,
        });
        // Keys added later enter only when set, so the images of builds that do not use
        // them keep their key and are still reused.
        for (key, value) in [
            ("secrets", serde_json::json!(build.secrets)),
            ("cache_from", serde_json::json!(build.cache_from)),
            ("extra_hosts", serde_json::json!(build.extra_hosts)),
            ("shm_size", serde_json::json!(build.shm_size)),
            (
                "dockerfile_inline",
                serde_json::json!(build.dockerfile_inline),
            ),
            ("platform", serde_json::json!(build.platform)),
        ] {
            if !value.is_null() && value.as_array().is_none_or(|a| !a.is_empty()) {
                recipe[key] = value;
            }
        }
        let digest = sha2::Sha256::digest(recipe.to_string().as_bytes());
        let key: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
        keys.insert(name.clone(), key);
    }
    Ok(keys)
}

/// Every image is built before any container is touched: a failed build leaves the running
/// revision alone. All of them together have `build_timeout`; a build past it or canceled
/// is dropped, which closes its request, and the engine then aborts it.
async fn build(run: &Run<'_>, plan: &Plan, secrets: &BuildSecrets) -> anyhow::Result<()> {
    let limit = run.settings.build_timeout;
    let builds = async {
        for build in &plan.builds {
            let step = run.reporter.step(StepKind::Build {
                services: build.services.iter().map(|s| s.to_string()).collect(),
            });
            docker::build::build_image(&run.docker, build, secrets, &step).await?;
            step.finish();
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(limit, run.cancel.guard(builds))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the build stage took longer than `build_timeout` ({}), so it was stopped",
                crate::report::format_elapsed(limit)
            )
        })??;
    for reuse in &plan.reused {
        run.reporter
            .info(format!("reusing `{}`, built earlier", reuse.from));
        for tag in &reuse.tags {
            docker::build::tag_image(&run.docker, &reuse.from, tag).await?;
        }
    }
    Ok(())
}

fn apply_options(run: &Run<'_>) -> apply::ApplyOptions {
    apply::ApplyOptions {
        health_timeout: run.settings.health_timeout,
        http_path: run.settings.health_path.clone(),
        cancel: run.cancel.clone(),
    }
}

/// Puts the work tree back to the live revision after a failed deploy, so that bind mounts
/// of the running containers see the files they were started with.
pub(crate) async fn restore_work_tree(record: &Record, reporter: &Reporter) {
    let Some(live) = record.live.clone() else {
        return;
    };
    let (repo, code) = (record.root.repo(), record.root.code());
    // No size limit: the live revision passed it when it was deployed, and putting the work
    // tree back matters more than a limit lowered since.
    match blocking(move || git::checkout(&repo, &code, &live, u64::MAX)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => reporter.warn(format!("could not restore the work tree: {e}")),
        Err(e) => reporter.warn(format!("could not restore the work tree: {e:#}")),
    }
}
