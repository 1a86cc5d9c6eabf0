//! The orchestrator: lock → observe → plan → build → apply → record. The only code that
//! touches every edge; each step is reported, and any failure leaves what runs running.

mod confine;
mod load;
pub(crate) mod lock;
pub(crate) mod preflight;
mod retention;
pub(crate) mod traffic;

use std::collections::BTreeMap;

use anyhow::Context;
use bollard::Docker;

use crate::compose::Spec;
use crate::docker::{self, apply};
use crate::git;
use crate::ids::{ProjectName, Revision, ServiceName, UserName};
use crate::ledger::{Ledger, NewDeployment, Status, Trigger};
use crate::plan::{self, Plan, PlanOptions};
use crate::report::{self, Reporter};
use crate::root::Root;
use crate::settings::Settings;
use sha2::Digest;

pub(crate) use load::{compose_file_names, load_spec, work_tree_sources};

use traffic::Traffic;

/// What to deploy and on whose behalf.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub(crate) target: Target,
    pub(crate) user: UserName,
    /// The uid that asked (see `identity`), recorded beside `user`.
    pub(crate) uid: u32,
    pub(crate) trigger: Trigger,
}

#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A push moved the deploy branch to this commit.
    Pushed { revision: Revision, refname: String },
    /// A revision expression from the command line (`--revision`), or the branch tip.
    Expression(Option<String>),
}

/// Runs one deploy from start to finish.
pub(crate) async fn deploy(
    root: &Root,
    request: Request,
    traffic: Traffic<'_>,
    reporter: &Reporter,
) -> anyhow::Result<()> {
    let settings = Settings::load(root)?;
    let project = settings.project(root)?;
    let repo = root.repo();
    reporter.limit_output(settings.build_log_limit);

    // Resolve before taking the lock: an unknown revision changes nothing.
    let (mut revision, refname) = match &request.target {
        Target::Pushed { revision, refname } => (revision.clone(), Some(refname.clone())),
        Target::Expression(expr) => {
            let expr = expr.clone().unwrap_or_else(|| settings.branch.clone());
            let branch = settings.branch.clone();
            (
                blocking(move || git::resolve(&repo, &expr, &branch)).await??,
                None,
            )
        }
    };

    let holder = format!(
        "the deploy of {} by {} (pid {}, since {})",
        revision.short(),
        request.user,
        std::process::id(),
        chrono::Local::now().format("%H:%M:%S")
    );
    let _lock = lock::acquire(&root.lock_file(), &holder, reporter).await?;

    let ledger = Ledger::open(&root.ledger_file()).await?;
    for row in ledger.running().await? {
        // We hold the lock, so whoever wrote a `running` row is gone.
        ledger
            .mark(
                row.id,
                Status::Abandoned,
                Some("the deploying process died"),
            )
            .await?;
        reporter.warn(format!(
            "deploy {} of {} was interrupted; marked abandoned",
            row.id, row.revision
        ));
    }

    // A push that waited may have been overtaken: deploy the branch's newest commit.
    let mut superseded = None;
    if let Target::Pushed { .. } = &request.target {
        let repo = root.repo();
        let branch = settings.branch.clone();
        if let Some(tip) = blocking(move || git::branch_tip(&repo, &branch)).await??
            && tip != revision
        {
            reporter.info(format!(
                "{} was superseded by a newer push; deploying {}",
                revision.short(),
                tip.short()
            ));
            superseded = Some(revision.clone());
            revision = tip;
        }
    }

    let started = chrono::Local::now();
    let log_name = report::build_log_name(started, &revision, &request.user);
    let log = root.build_logs().join(&log_name);
    reporter.add_build_log(&root.build_logs(), &log_name)?;

    let new = NewDeployment {
        revision: revision.clone(),
        refname: refname.clone(),
        user: request.user.clone(),
        uid: request.uid,
        trigger: request.trigger,
        log_path: log.clone(),
        pid: std::process::id(),
    };
    let own = match superseded {
        Some(own) => {
            let mut row = new.clone();
            row.revision = own;
            Some(ledger.start(&row).await?)
        }
        None => None,
    };
    let id = ledger.start(&new).await?;
    if let Some(own) = own {
        ledger.mark(own, Status::Superseded, None).await?;
        ledger.set_superseded(own, id).await?;
    }
    let (repo, rev) = (root.repo(), revision.clone());
    let commit = blocking(move || git::commit_info(&repo, &rev)).await??;
    reporter.info(format!(
        "deploying {} \"{}\" by {} to `{project}` for {} ({})",
        revision,
        commit.subject,
        commit.author,
        request.user,
        trigger_word(request.trigger)
    ));

    if request.trigger == Trigger::Rollback {
        reporter.warn("rolling back the code only: the database keeps its data, and its schema is not rolled back");
    }
    let live = ledger.last_succeeded().await?.map(|d| d.revision);
    let run = Run {
        root,
        settings: &settings,
        project: &project,
        revision: &revision,
        trigger: request.trigger,
        traffic,
        reporter,
    };
    let result = async {
        let docker = docker::connect().await?;
        let images = run.execute(&docker).await?;
        anyhow::Ok((docker, images))
    }
    .await;
    match result {
        Ok((docker, images)) => {
            ledger.finish(id, Status::Succeeded, &images, None).await?;
            reporter.info(format!(
                "deployed {} in {:.1}s",
                revision.short(),
                elapsed(started)
            ));
            let retention = settings.retention;
            if let Err(e) = retention::apply(
                root, &docker, &ledger, &project, &revision, retention, reporter,
            )
            .await
            {
                reporter.warn(format!("retention: {e:#}"));
            }
            Ok(())
        }
        Err(e) => {
            let message = format!("{e:#}");
            reporter.error(format!("deploy failed: {message}"));
            ledger
                .finish(id, Status::Failed, &[], Some(&message))
                .await?;
            restore_work_tree(root, live.as_ref(), reporter).await;
            // The reason was just reported; the last line only says where to read more.
            Err(anyhow::anyhow!(
                "deploy of {} failed; see `{}`",
                revision.short(),
                log.display()
            ))
        }
    }
}

struct Run<'a> {
    root: &'a Root,
    settings: &'a Settings,
    project: &'a ProjectName,
    revision: &'a Revision,
    trigger: Trigger,
    traffic: Traffic<'a>,
    reporter: &'a Reporter,
}

impl Run<'_> {
    /// The steps after the ledger row exists; returns the images of the deployed revision.
    async fn execute(&self, docker: &Docker) -> anyhow::Result<Vec<String>> {
        // A full disk breaks what runs too: refuse before touching anything.
        preflight::free_space(docker, self.settings).await?;

        let step = self.reporter.step("checkout");
        let (repo, code, rev) = (self.root.repo(), self.root.code(), self.revision.clone());
        let limit = self.settings.blob_size_limit;
        blocking(move || git::checkout(&repo, &code, &rev, limit)).await??;
        step.finish();

        let step = self.reporter.step("read compose file");
        let sources = work_tree_sources(self.root, self.settings)?;
        let loaded = load_spec(
            self.root,
            self.settings,
            self.project,
            &sources,
            self.reporter,
        )?;
        let checked = preflight::check(
            self.root,
            self.settings,
            self.project,
            loaded,
            docker,
            self.reporter,
        )
        .await?;
        let spec = preflight::prepare(self.root, checked)?;
        step.finish();

        let step = self.reporter.step("plan");
        let plan = self.plan(docker, &spec).await?;
        for line in plan.to_string().lines().skip(1) {
            self.reporter.output("plan", line.trim_start());
        }
        step.finish();
        if self.trigger == Trigger::Rollback && !plan.builds.is_empty() {
            self.reporter.info(format!(
                "the image of {} was removed by retention; rebuilding it from git",
                self.revision.short()
            ));
        }

        // Every image is built before any container is touched: a failed build leaves the
        // running revision alone.
        for build in &plan.builds {
            let services: Vec<&str> = build.services.iter().map(|s| s.as_str()).collect();
            let step = self.reporter.step(format!("build {}", services.join(", ")));
            docker::build::build_image(docker, build, self.reporter).await?;
            step.finish();
        }
        for reuse in &plan.reused {
            self.reporter
                .info(format!("reusing `{}`, built earlier", reuse.from));
            for tag in &reuse.tags {
                docker::build::tag_image(docker, &reuse.from, tag).await?;
            }
        }

        let options = apply::ApplyOptions {
            health_timeout: self.settings.health_timeout,
            http_path: self.settings.health_path.clone(),
        };
        let applied = apply::apply(docker, &plan, self.reporter, &options).await?;
        traffic::cut_over(self.traffic, docker, &plan, applied, self.reporter).await?;
        Ok(plan.images())
    }

    async fn plan(&self, docker: &Docker, spec: &Spec) -> anyhow::Result<Plan> {
        let build_keys = self.build_keys(spec).await?;
        let mut tags = Vec::new();
        for (name, s) in spec.services.iter().filter(|(_, s)| s.build.is_some()) {
            let repo = plan::names::image_repo(self.project, name, s.image.as_deref());
            tags.push(plan::names::revision_tag(&repo, self.revision));
            if let Some(key) = build_keys.get(name) {
                tags.push(plan::names::build_tag(&repo, key));
            }
        }
        let observed = docker::observe::observe(docker, self.project, &tags).await?;
        let options = PlanOptions {
            config_dir: self.root.configs(),
            publish: self.traffic.publish(),
            build_keys,
        };
        Ok(plan::plan(
            spec,
            self.project,
            self.revision,
            &observed,
            &options,
        )?)
    }
}

impl Run<'_> {
    /// For each built service whose context is tracked in git: a key of the context's tree
    /// and the build's settings. Untracked files in `ROOT/code` are not part of it; a
    /// context that is not in git gets no key (and is always built).
    async fn build_keys(&self, spec: &Spec) -> anyhow::Result<BTreeMap<ServiceName, String>> {
        // Contexts are real paths (the policy resolved them), so the work tree is too.
        let code = confine::resolve(&self.root.code());
        let mut keys = BTreeMap::new();
        for (name, svc) in &spec.services {
            let Some(build) = &svc.build else { continue };
            let Ok(relative) = build.context.strip_prefix(&code) else {
                continue;
            };
            let (repo, rev, relative) = (
                self.root.repo(),
                self.revision.clone(),
                relative.to_path_buf(),
            );
            let Some(tree) = blocking(move || git::tree_id(&repo, &rev, &relative)).await?? else {
                continue;
            };
            let recipe = serde_json::json!({
                "tree": tree,
                "dockerfile": build.dockerfile,
                "args": build.args,
                "target": build.target,
                "labels": build.labels,
                "network": build.network,
            });
            let digest = sha2::Sha256::digest(recipe.to_string().as_bytes());
            let key: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
            keys.insert(name.clone(), key);
        }
        Ok(keys)
    }
}

/// Puts the work tree back to the live revision after a failed deploy, so that bind
/// mounts of the running containers see the files they were started with.
async fn restore_work_tree(root: &Root, live: Option<&Revision>, reporter: &Reporter) {
    let Some(live) = live.cloned() else { return };
    let (repo, code) = (root.repo(), root.code());
    // No size limit: the live revision passed it when it was deployed, and putting the work
    // tree back matters more than a limit lowered since.
    match blocking(move || git::checkout(&repo, &code, &live, u64::MAX)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => reporter.warn(format!("could not restore the work tree: {e}")),
        Err(e) => reporter.warn(format!("could not restore the work tree: {e}")),
    }
}

fn trigger_word(t: Trigger) -> &'static str {
    match t {
        Trigger::Push => "push",
        Trigger::Manual => "manual",
        Trigger::Rollback => "rollback",
    }
}

fn elapsed(since: chrono::DateTime<chrono::Local>) -> f64 {
    (chrono::Local::now() - since).num_milliseconds() as f64 / 1000.0
}

/// Runs blocking git2 work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .context("a background task panicked")
}
