//! The release phase, between two halves of `apply`: first the services it needs come up
//! (the databases, the release service's dependencies, and theirs), then the databases are
//! dumped (or a dump is restored), then the release command runs in a one-off container of
//! the new image. Only then are the app's containers started or replaced, so a failed
//! migration leaves the running version untouched, as Heroku's release phase does.
//!
//! The release command runs when it or its image changed since the live deploy: a push that
//! changes neither (a no-op push, a docs change with a reused image) does not run it again.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;

use super::backups::{self, Occasion};
use super::stages::Run;
use crate::compose::Spec;
use crate::compose::spec::Condition;
use crate::docker::apply::Applying;
use crate::docker::{observe, oneoff, postgres};
use crate::ids::ServiceName;
use crate::ledger::{BackupReason, Release, ReleaseOutcome, Trigger};
use crate::plan::container::ContainerSpec;
use crate::plan::{Action, Plan};
use crate::report::StepKind;
use crate::settings::Backups;

/// What the phase does for one deploy, decided before anything is touched.
pub(crate) struct Phase {
    /// The services brought up before the phase; the rest come after it.
    pub(crate) first: BTreeSet<ServiceName>,
    databases: Vec<ServiceName>,
    release: Option<Planned>,
    dump: bool,
    /// Dumps to restore instead of taking new ones, by service (file names in ROOT/backups).
    restore: BTreeMap<ServiceName, String>,
}

struct Planned {
    service: ServiceName,
    waits: Vec<(ServiceName, Condition)>,
    container: ContainerSpec,
    record: Release,
}

/// What the phase did that a later failure must be told about.
#[derive(Default)]
pub(crate) struct Done {
    /// The release command ran and exited 0: the database may have changed.
    pub(crate) released: bool,
    /// The dumps taken before it, by service.
    pub(crate) dumps: Vec<String>,
}

/// Decides the phase: whether the release command runs (it changed, or its image did),
/// whether databases are dumped (`backups:`) or restored (the request), and which services
/// must be up first.
pub(crate) async fn prepare(run: &Run<'_>, spec: &Spec, plan: &Plan) -> anyhow::Result<Phase> {
    let databases = spec.databases();
    let restore = restore_targets(run, &databases)?;
    let release = match &spec.release {
        Some(declared) => {
            let step = plan
                .step(&declared.service)
                .context("the release service is not in the plan")?;
            let image = observe::image_content(&run.docker, &step.container.image)
                .await?
                .unwrap_or_else(|| step.container.image.clone());
            let unchanged = run.record.live_release.as_ref().is_some_and(|live| {
                live.command == declared.command
                    && live.image == image
                    && live.outcome != ReleaseOutcome::Failed
            });
            // `deploy restore-db` puts data back under the code that runs: nothing to release.
            let outcome = if unchanged || run.trigger == Trigger::Restore {
                ReleaseOutcome::Skipped
            } else {
                ReleaseOutcome::Done
            };
            Some(Planned {
                service: declared.service.clone(),
                waits: step.waits.clone(),
                container: step.container.release(
                    run.project,
                    &declared.service,
                    run.revision,
                    &declared.command,
                ),
                record: Release {
                    command: declared.command.clone(),
                    image,
                    outcome,
                },
            })
        }
        None => None,
    };
    let releasing = release
        .as_ref()
        .is_some_and(|r| r.record.outcome == ReleaseOutcome::Done);
    let dump = restore.is_empty()
        && !databases.is_empty()
        && match run.settings.backups {
            Backups::Never => false,
            Backups::Release => releasing,
            Backups::Always => releasing || plan.changes_containers(),
        };
    if dump || !restore.is_empty() {
        check_running_databases(run, plan, &databases).await?;
    }
    let mut needed: Vec<ServiceName> = Vec::new();
    if dump || !restore.is_empty() || releasing {
        needed.extend(databases.iter().cloned());
    }
    if let Some(r) = release.as_ref().filter(|_| releasing) {
        needed.extend(r.waits.iter().map(|(dep, _)| dep.clone()));
    }
    Ok(Phase {
        first: plan.with_dependencies(needed),
        databases,
        release,
        dump,
        restore,
    })
}

/// A database service whose container runs already must be PostgreSQL: found out before
/// anything is touched, not once it has been replaced.
async fn check_running_databases(
    run: &Run<'_>,
    plan: &Plan,
    databases: &[ServiceName],
) -> anyhow::Result<()> {
    for service in databases {
        let current = plan.step(service).and_then(|s| match &s.action {
            Action::Keep(c) | Action::Replace(c) if c.running => Some(c),
            _ => None,
        });
        if let Some(c) = current {
            postgres::database(&run.docker, &c.id)
                .await
                .with_context(|| format!("`{service}` is not a database `deploy` can dump"))?;
        }
    }
    Ok(())
}

/// The request's dumps, each for a database service of this compose file.
fn restore_targets(
    run: &Run<'_>,
    databases: &[ServiceName],
) -> anyhow::Result<BTreeMap<ServiceName, String>> {
    let mut out = BTreeMap::new();
    for (service, file) in run.restore {
        let Some(service) = databases.iter().find(|d| d.as_str() == service) else {
            anyhow::bail!(
                "`{file}` is a dump of `{service}`, which is not a PostgreSQL service of this compose file (its image is not `postgres`, and `x-deploy.databases` does not name it)"
            );
        };
        backups::path_of(run.root, file)?;
        out.insert(service.clone(), file.clone());
    }
    Ok(out)
}

impl Phase {
    /// Runs the phase once the services of `first` are up: the dumps (or the restore), then
    /// the release command. The ledger row records what the release did, whatever it did.
    pub(crate) async fn run(
        &self,
        run: &Run<'_>,
        plan: &Plan,
        applying: &mut Applying<'_>,
    ) -> anyhow::Result<Done> {
        let mut done = Done::default();
        if let Some(release) = &self.release {
            applying.wait_for(&release.service, &release.waits).await?;
        }
        if !self.restore.is_empty() {
            self.restore(run, plan, applying).await?;
        } else if self.dump {
            done.dumps = self.dump(run, applying).await?;
        }
        let Some(release) = &self.release else {
            return Ok(done);
        };
        let mut record = release.record.clone();
        if record.outcome == ReleaseOutcome::Done {
            run.enter("release").await?;
            let step = run.reporter.step(StepKind::Release);
            step.output(format!("running `{}`", shell_words(&record.command)));
            let ran = oneoff::run(
                &run.docker,
                &release.container,
                run.settings.release_timeout,
                run.cancel,
                &step,
            )
            .await;
            if let Err(e) = ran {
                record.outcome = ReleaseOutcome::Failed;
                run.record
                    .ledger
                    .set_release(run.record.id, &record)
                    .await?;
                anyhow::bail!("the release command failed: {e}; nothing was replaced");
            }
            step.finish();
            done.released = true;
        } else {
            run.reporter.info(format!(
                "release: `{}` and its image are unchanged since the live deploy; not run again",
                shell_words(&record.command)
            ));
        }
        run.record
            .ledger
            .set_release(run.record.id, &record)
            .await?;
        Ok(done)
    }

    async fn dump(&self, run: &Run<'_>, applying: &Applying<'_>) -> anyhow::Result<Vec<String>> {
        let occasion = Occasion {
            reason: if self.release.is_some() {
                BackupReason::Release
            } else {
                BackupReason::Deploy
            },
            live: run.record.live.clone(),
            before: Some(run.revision.clone()),
            deployment: Some(run.record.id),
        };
        let mut files = Vec::new();
        for service in &self.databases {
            let container = applying
                .container(service)
                .with_context(|| format!("the database `{service}` has no running container"))?
                .to_owned();
            let backup = backups::take(
                run.root,
                &run.docker,
                &run.record.ledger,
                run.reporter,
                service,
                &container,
                &occasion,
            )
            .await?;
            files.push(backup.dump.file);
        }
        Ok(files)
    }

    /// Checks every dump, stops what could write to the databases, restores, and starts
    /// again what the plan keeps.
    async fn restore(
        &self,
        run: &Run<'_>,
        plan: &Plan,
        applying: &mut Applying<'_>,
    ) -> anyhow::Result<()> {
        let mut targets = Vec::new();
        for (service, file) in &self.restore {
            let container = applying
                .container(service)
                .with_context(|| format!("the database `{service}` has no running container"))?
                .to_owned();
            backups::check_before_restore(
                run.root,
                &run.docker,
                &run.record.ledger,
                &container,
                file,
            )
            .await?;
            targets.push((service, container, file));
        }
        let later = |s: &ServiceName| !self.first.contains(s);
        applying.stop_services(plan, later).await?;
        for (service, container, file) in targets {
            backups::restore(
                run.root,
                &run.docker,
                run.reporter,
                service,
                &container,
                file,
            )
            .await?;
        }
        applying.start_kept(plan, later).await?;
        Ok(())
    }
}

/// A command as a shell would read it back.
fn shell_words(command: &[String]) -> String {
    shlex::try_join(command.iter().map(String::as_str)).unwrap_or_else(|_| command.join(" "))
}
