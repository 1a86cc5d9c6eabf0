//! `deploy config [REV]`: the merged, interpolated compose file as `deploy` will run it, the
//! way `docker-compose config` prints it.

use std::path::Path;

use anyhow::{Context, bail};
use serde_yaml::Value;

use crate::compose::{self, SourceFile};
use crate::git;
use crate::pipeline;
use crate::report::{Redactor, Reporter};
use crate::root::Root;
use crate::settings::Settings;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Read the compose files as committed at REV (a full or short sha, a tag, a branch or
    /// `main~1`) in ROOT/code.git instead of the checked-out ROOT/code. Everything else still
    /// comes from the disk: ROOT/deploy.yml and its env_file, ROOT/code/.env, and the files
    /// the compose file names (env_file, secrets, configs), which resolve against ROOT/code.
    #[arg(value_name = "REV")]
    revision: Option<String>,
}

pub(crate) async fn run(root: Root, args: Args) -> anyhow::Result<u8> {
    // Warnings (unset variables) go to stderr, the YAML alone to stdout.
    let reporter = Reporter::new().with_terminal();
    let settings = Settings::load(&root)?;
    let project = settings.project(&root)?;
    let loaded = {
        let (root, settings, project, reporter) = (
            root.clone(),
            settings.clone(),
            project.clone(),
            reporter.clone(),
        );
        pipeline::blocking(move || {
            let sources = sources(&root, &settings, args.revision.as_deref())?;
            pipeline::load_spec(&root, &settings, &project, &sources, &reporter)
        })
        .await??
    };
    // The same checks as a deploy, on the same resolved paths: what this prints, a deploy
    // accepts.
    let docker = crate::docker::connect().await?;
    let checked =
        pipeline::preflight::check(&root, &settings, &project, loaded, &docker, &reporter).await?;
    let mut value = compose::render::render(&checked.spec, project.as_str());
    // Secrets appear as paths; this makes sure a value that also reached an environment
    // variable or a label is not printed either. Strings are redacted one by one, so the
    // output stays valid YAML.
    redact(&mut value, &reporter.redactor());
    print!("{}", compose::render::to_yaml(&value));
    Ok(super::exit::SUCCESS)
}

fn sources(
    root: &Root,
    settings: &Settings,
    revision: Option<&str>,
) -> anyhow::Result<pipeline::Sources> {
    match revision {
        None => {
            if !root.code().is_dir() {
                bail!(
                    "nothing is checked out in `{}` yet; push first, or name a revision",
                    root.code().display()
                );
            }
            pipeline::work_tree_sources(root, settings)
        }
        Some(expr) => revision_sources(root, settings, expr),
    }
}

fn redact(value: &mut Value, redactor: &Redactor) {
    match value {
        Value::String(s) => *s = redactor.redact(s).into_owned(),
        Value::Sequence(items) => items.iter_mut().for_each(|v| redact(v, redactor)),
        Value::Mapping(map) => map.values_mut().for_each(|v| redact(v, redactor)),
        Value::Tagged(tagged) => redact(&mut tagged.value, redactor),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The compose files as committed at `expr`, and the files they name, read from there too.
fn revision_sources(
    root: &Root,
    settings: &Settings,
    expr: &str,
) -> anyhow::Result<pipeline::Sources> {
    let repo = root.repo();
    let rev = git::resolve(&repo, expr, &settings.branch)?;
    let short = rev.short().to_owned();
    let read = move |rel: &Path| -> Result<Option<String>, String> {
        match git::read_file(&repo, &rev, rel, compose::MAX_FILE_SIZE) {
            Ok(Some(bytes)) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| format!("`{}` at {} is not UTF-8 text", rel.display(), rev.short())),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    };
    let names = pipeline::compose_file_names(settings, |rel| matches!(read(rel), Ok(Some(_))))
        .with_context(|| format!("failed to find the compose files of {short}"))?;
    let files = names
        .into_iter()
        .map(|rel| match read(&rel) {
            Ok(text) => Ok(SourceFile {
                text: text.unwrap_or_default(),
                path: rel,
            }),
            Err(e) => Err(anyhow::anyhow!(e)),
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(pipeline::Sources {
        files,
        read: Box::new(read),
    })
}
