//! Which compose files a deploy reads, and loading them into a `Spec` with the host's
//! settings: shared by the deploy and by `deploy config`, so both see the same result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::confine;
use super::confine::ReadError;
use crate::compose::policy::{Refusal, Use};
use crate::compose::{self, SourceFile, Spec};
use crate::ids::ProjectName;
use crate::report::Reporter;
use crate::root::Root;
use crate::settings::Settings;

/// The names docker-compose looks for, in its order.
const DEFAULTS: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// The compose files to layer, relative to the tree: `deploy.yml`'s list, or the first
/// default name found plus its override file. `exists` says whether the tree (the work tree
/// or a revision) has a file at a relative path.
pub(crate) fn compose_file_names(
    settings: &Settings,
    exists: impl Fn(&Path) -> bool,
) -> anyhow::Result<Vec<PathBuf>> {
    if !settings.compose_files.is_empty() {
        if let Some(missing) = settings.compose_files.iter().find(|f| !exists(f)) {
            bail!(
                "compose file `{}` (from `compose_files` in deploy.yml) is not in the pushed tree",
                missing.display()
            );
        }
        return Ok(settings.compose_files.clone());
    }
    let Some(main) = DEFAULTS.iter().map(PathBuf::from).find(|p| exists(p)) else {
        bail!(
            "no compose file in the pushed tree: add `compose.yaml` or `docker-compose.yml` at the repo root"
        );
    };
    let mut files = vec![main.clone()];
    let stem = main
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = main
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let override_file = PathBuf::from(format!("{stem}.override.{ext}"));
    if exists(&override_file) {
        files.push(override_file);
    }
    Ok(files)
}

/// Compose files, read, and how to read the files they name (`include:`, `extends.file`)
/// from the same tree, with the same checks.
pub(crate) struct Sources {
    pub(crate) files: Vec<SourceFile>,
    pub(crate) read: compose::reference::Reader,
}

/// The compose files of the checked-out tree in `ROOT/code`, read. Each must really be in
/// the work tree (a pushed symlink to a host file is refused) and within the size limit;
/// so must each file they name.
pub(crate) fn work_tree_sources(root: &Root, settings: &Settings) -> anyhow::Result<Sources> {
    let code = root.code();
    let layout = confine::layout(root, settings)?;
    let host = settings.clone();
    let read = move |rel: &Path| {
        let limit = compose::MAX_FILE_SIZE;
        match confine::read(&code.join(rel), Use::ComposeFile, &layout, &host, limit) {
            Ok(file) => Ok(file.map(|f| f.text)),
            Err(e) => Err(e.to_string()),
        }
    };
    let code = root.code();
    let files = compose_file_names(settings, |rel| code.join(rel).is_file())?
        .into_iter()
        .map(|rel| match read(&rel) {
            Ok(Some(text)) => Ok(SourceFile { path: rel, text }),
            Ok(None) => bail!("`{}` is not in the pushed tree", rel.display()),
            Err(e) => bail!("`{}`: {e}", rel.display()),
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Sources {
        files,
        read: Box::new(read),
    })
}

/// A loaded compose project: the spec (env files not yet read: the policy judges them
/// first) and the variables it was interpolated with, which bare `KEY`s of env files read.
pub(crate) struct Loaded {
    pub(crate) spec: Spec,
    pub(crate) env: BTreeMap<String, String>,
    /// A refused `.env`: reported with the policy's other refusals, all at once.
    pub(crate) refusals: Vec<Refusal>,
}

/// Loads compose files (already read, from the work tree or a revision) into a validated
/// `Spec`. Relative paths resolve against the directory of the first file in `ROOT/code`, as
/// docker-compose resolves them against its project directory, and `.env` is read from
/// there. Warnings go to the reporter.
pub(crate) fn load_spec(
    root: &Root,
    settings: &Settings,
    project: &ProjectName,
    sources: &Sources,
    reporter: &Reporter,
) -> anyhow::Result<Loaded> {
    let project_dir = project_dir(root, &sources.files);
    let (env, refusals) = interpolation_env(root, &project_dir, settings)?;
    let options = compose::LoadOptions {
        project_dir: &project_dir,
        env: &env,
        profiles: &settings.profiles,
        read: &sources.read,
    };
    let loaded = compose::load(&sources.files, &options)?;
    for warning in &loaded.warnings {
        reporter.warn(warning.clone());
    }
    // The project must not move when a push edits `name:`: that would start a second stack
    // beside the first. deploy.yml decides.
    if let Some(name) = loaded.name.filter(|n| n != project) {
        reporter.warn(format!(
            "`name: {name}` in the compose file is ignored; the project is `{project}` (set `project:` in deploy.yml to change it)"
        ));
    }
    let mut spec = loaded.spec;
    if let Some(limits) = settings.limits {
        cap(&mut spec, limits);
    }
    Ok(Loaded {
        spec,
        env,
        refusals,
    })
}

/// The directory of the first compose file, in `ROOT/code`: `ROOT/code` itself unless
/// `compose_files` names files in a subdirectory.
fn project_dir(root: &Root, sources: &[SourceFile]) -> PathBuf {
    let code = root.code();
    match sources.first().and_then(|f| f.path.parent()) {
        Some(dir) => code.join(dir),
        None => code,
    }
}

/// Variables for `${…}`: the `.env` of the project directory, then `deploy.yml`'s
/// `env_file`, then the variables of this process that `interpolate_env` names (later wins).
/// Nothing else of this process's environment is read: it is the host's (the daemon's, or
/// the hook's), not the pusher's to read through a compose file. A `.env` the policy refuses
/// is left out and returned as a refusal.
fn interpolation_env(
    root: &Root,
    project_dir: &Path,
    settings: &Settings,
) -> anyhow::Result<(BTreeMap<String, String>, Vec<Refusal>)> {
    let mut env = BTreeMap::new();
    let mut refusals = Vec::new();
    let layout = confine::layout(root, settings)?;
    let dot_env = project_dir.join(".env");
    match confine::read(
        &dot_env,
        Use::EnvFile,
        &layout,
        settings,
        settings.file_size_limit,
    ) {
        Ok(Some(file)) => env.extend(env_entries(&file.text, &dot_env)?),
        Ok(None) => {}
        Err(ReadError::Refused(reason)) => refusals.push(Refusal {
            key_path: ".env".to_owned(),
            reason,
            allowance: None,
        }),
        Err(e) => bail!("`.env`: {e}"),
    }
    if let Some(file) = &settings.env_file {
        let path = root.path().join(file);
        let text = read_host_file(&path, settings.file_size_limit)
            .context("failed to read the `env_file` of deploy.yml")?;
        env.extend(env_entries(&text, &path)?);
    }
    for name in &settings.interpolate_env {
        if let Ok(value) = std::env::var(name) {
            env.insert(name.clone(), value);
        }
    }
    Ok((env, refusals))
}

/// A preview's `limits`: every service gets at most these, whatever its compose file says.
fn cap(spec: &mut compose::Spec, limits: crate::settings::Limits) {
    for svc in spec.services.values_mut() {
        let r = &mut svc.options.resources;
        if let Some(cpus) = limits.cpus {
            r.cpus = Some(r.cpus.map_or(cpus, |c| c.min(cpus)));
        }
        if let Some(memory) = limits.memory {
            r.memory = Some(r.memory.map_or(memory, |m| m.min(memory)));
        }
    }
}

/// The operator's own file: no policy, but still a regular file within the size limit.
fn read_host_file(path: &Path, limit: u64) -> anyhow::Result<String> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("failed to read `{}`", path.display()))?;
    if !meta.is_file() || meta.len() > limit {
        bail!(
            "`{}` must be a regular file of at most {}",
            path.display(),
            crate::compose::bytes::human(limit)
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("failed to read `{}`", path.display()))
}

/// `KEY=VALUE` pairs of an env file; bare `KEY` lines give nothing to interpolate with.
fn env_entries(text: &str, path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let entries = compose::envfile::parse(text).map_err(|(line, message)| {
        anyhow::anyhow!("`{}` line {line}: {message}", path.display())
    })?;
    Ok(entries
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(settings: &Settings, present: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
        compose_file_names(settings, |p| present.iter().any(|f| Path::new(f) == p))
    }

    #[test]
    fn default_lookup_takes_the_first_name_and_its_override() {
        let s = Settings::default();
        assert_eq!(
            names(&s, &["docker-compose.yml", "compose.yaml"]).unwrap(),
            [PathBuf::from("compose.yaml")]
        );
        assert_eq!(
            names(&s, &["docker-compose.yml", "docker-compose.override.yml"]).unwrap(),
            [
                PathBuf::from("docker-compose.yml"),
                PathBuf::from("docker-compose.override.yml")
            ]
        );
        let err = names(&s, &["app.yml"]).unwrap_err().to_string();
        assert!(err.contains("no compose file"), "{err}");
    }

    #[test]
    fn listed_files_must_all_exist() {
        let s = Settings {
            compose_files: vec!["a.yml".into(), "b.yml".into()],
            ..Settings::default()
        };
        assert_eq!(
            names(&s, &["a.yml", "b.yml", "docker-compose.yml"]).unwrap(),
            [PathBuf::from("a.yml"), PathBuf::from("b.yml")]
        );
        let err = names(&s, &["a.yml"]).unwrap_err().to_string();
        assert!(err.contains("`b.yml`"), "{err}");
    }
}
