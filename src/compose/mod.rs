//! Compose files → validated `Spec`: parsing, interpolation, layering, key-path errors and
//! the security policy. Reads only the files it is given; no Docker, git or database.

pub(crate) mod bytes;
pub(crate) mod duration;
pub(crate) mod envfile;
mod interpolate;
mod layer;
mod mounts;
mod normalize;
pub(crate) mod options;
pub(crate) mod policy;
mod ports;
mod raw;
pub(crate) mod reference;
pub(crate) mod render;
pub(crate) mod spec;
mod tree;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

use crate::ids::ProjectName;
pub(crate) use spec::Spec;
pub(crate) use tree::MAX_FILE_SIZE;

/// One compose file, already read: the name to show in errors and its text.
pub(crate) struct SourceFile {
    pub(crate) path: PathBuf,
    pub(crate) text: String,
}

/// What loading needs besides the files.
pub(crate) struct LoadOptions<'a> {
    /// Where relative paths resolve (`ROOT/code`).
    pub(crate) project_dir: &'a Path,
    /// Variables for `${…}` interpolation (host env, `.env`, `deploy.yml`'s `env_file`).
    pub(crate) env: &'a BTreeMap<String, String>,
    /// Enabled profiles.
    pub(crate) profiles: &'a [String],
    /// Reads the files that `include:` and `extends.file` name.
    pub(crate) read: reference::Read<'a>,
}

/// A compose file problem, located by file and key path, with any others found in the same
/// pass (every unsupported key of a file, not just the first).
#[derive(Debug, thiserror::Error)]
pub(crate) struct ComposeError {
    pub(crate) file: Option<PathBuf>,
    /// `services.web.ports[0]`, or empty when the problem is the whole document.
    pub(crate) key_path: String,
    pub(crate) message: String,
    /// More problems of the same kind, each on a line of its own.
    pub(crate) also: Vec<ComposeError>,
}

impl std::fmt::Display for ComposeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}{}",
            location(&self.file, &self.key_path),
            self.message
        )?;
        for other in &self.also {
            write!(f, "\n{other}")?;
        }
        Ok(())
    }
}

fn location(file: &Option<PathBuf>, key_path: &str) -> String {
    let mut out = String::new();
    if let Some(f) = file {
        out.push_str(&format!("`{}`: ", f.display()));
    }
    if !key_path.is_empty() {
        out.push_str(key_path);
        out.push_str(": ");
    }
    out
}

impl ComposeError {
    /// A problem with the whole file (syntax, shape).
    pub(crate) fn whole(message: impl Into<String>) -> Self {
        Self {
            file: None,
            key_path: String::new(),
            message: message.into(),
            also: Vec::new(),
        }
    }

    /// A problem at a key path; the file is filled in by `load` when it is known.
    pub(crate) fn at(key_path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            file: None,
            key_path: key_path.into(),
            message: message.into(),
            also: Vec::new(),
        }
    }

    /// The same error, for a value read at `prefix` (`services.web.init`).
    pub(crate) fn under(mut self, prefix: &str) -> Self {
        self.key_path = join(prefix, &self.key_path);
        self
    }

    fn in_file(mut self, file: &Path) -> Self {
        self.file.get_or_insert_with(|| file.to_path_buf());
        self
    }
}

/// A loaded project: the validated spec and what the caller should know about it.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) spec: Spec,
    /// The top-level `name:`, if the file sets one.
    pub(crate) name: Option<ProjectName>,
    /// Things worth a warning that do not stop the deploy (unset variables, so far).
    pub(crate) warnings: Vec<String>,
}

/// Parses, interpolates and merges `files` (in layering order) into a validated `Spec`.
///
/// Each file is parsed, its merge keys applied, its `x-` extensions dropped and its strings
/// interpolated on its own; then the files are layered, and only the result is typed and
/// validated, as the Compose Specification orders it.
pub(crate) fn load(
    files: &[SourceFile],
    options: &LoadOptions<'_>,
) -> Result<Loaded, ComposeError> {
    if files.is_empty() {
        return Err(ComposeError::whole("no compose file given"));
    }
    let mut unset = interpolate::Unset::default();
    let mut trees = Vec::with_capacity(files.len());
    let mut first_use_file = BTreeMap::new();
    for file in files {
        let tree = prepare(file, options, &mut unset).map_err(|e| e.in_file(&file.path))?;
        for name in unset.first_use.keys() {
            first_use_file
                .entry(name.clone())
                .or_insert_with(|| file.path.clone());
        }
        trees.push(tree);
    }
    let mut merged = trees
        .iter()
        .cloned()
        .reduce(layer::merge)
        .expect("at least one file");
    if let Err(e) = tree::resolve_tags(&mut merged, &mut String::new()) {
        return Err(locate(e, files, &trees, &merged));
    }
    let locate = |e: ComposeError| locate(e, files, &trees, &merged);
    let mut typed = merged.clone();
    let development = drop_development_keys(&mut typed);
    let mut unknown = Vec::new();
    let service_options = take_options(&mut typed, &mut unknown).map_err(locate)?;
    let raw: raw::Compose = typed_as(typed, "", &mut unknown).map_err(locate)?;
    let mut unsupported = unknown
        .into_iter()
        .map(|path| locate(ComposeError::at(path, "not supported")));
    if let Some(first) = unsupported.next() {
        return Err(ComposeError {
            also: unsupported.collect(),
            ..first
        });
    }
    let (spec, name) = normalize::spec(raw, service_options, options).map_err(locate)?;
    let warnings = unset
        .first_use
        .iter()
        .map(|(var, at)| {
            format!(
                "variable `{var}` is not set, using an empty string (first at `{at}` in `{}`)",
                first_use_file[var].display()
            )
        })
        .chain(development)
        .collect();
    Ok(Loaded {
        spec,
        name,
        warnings,
    })
}

/// `develop:` configures `docker compose watch` on a developer's machine. A deploy has no use
/// for it, so it is dropped with one warning rather than refused.
fn drop_development_keys(tree: &mut Value) -> Option<String> {
    let Some(Value::Mapping(services)) = tree.get_mut("services") else {
        return None;
    };
    let mut names = Vec::new();
    for (name, service) in services.iter_mut() {
        if let Value::Mapping(map) = service
            && map.remove("develop").is_some()
        {
            names.push(name.as_str().unwrap_or_default().to_owned());
        }
    }
    (!names.is_empty()).then(|| {
        format!(
            "`develop` (services {}) is for `docker compose watch` on a developer's machine; a deploy ignores it",
            names.join(", ")
        )
    })
}

/// Takes the keys of `options::Options` out of every service, validated, by service name;
/// the serde mirror types the rest. Keys inside them that no type knows go to `unknown`.
fn take_options(
    tree: &mut Value,
    unknown: &mut Vec<String>,
) -> Result<BTreeMap<String, options::Options>, ComposeError> {
    let mut out = BTreeMap::new();
    let Some(Value::Mapping(services)) = tree.get_mut("services") else {
        return Ok(out);
    };
    for (name, service) in services.iter_mut() {
        let (Some(name), Value::Mapping(map)) = (name.as_str(), service) else {
            continue;
        };
        let at = format!("services.{name}");
        // Some keys of `deploy:` are modelled with the service's own (the restart policy
        // with `restart:`, the replicas with `scale:`); the rest of `deploy:` belongs to the
        // table. `x-` keys are gone by now, so the names they move to are free.
        if let Some(deploy) = map.get_mut("deploy").and_then(Value::as_mapping_mut) {
            let moved: Vec<(String, Value)> = MOVED_DEPLOY_KEYS
                .iter()
                .filter_map(|key| Some((format!("{MOVED_PREFIX}{key}"), deploy.remove(*key)?)))
                .collect();
            if deploy.is_empty() {
                map.remove("deploy");
            }
            for (key, value) in moved {
                map.insert(key.into(), value);
            }
        }
        let taken = options::Options::take(&mut options::Taker::new(map, &at, unknown))?;
        out.insert(name.to_owned(), taken);
    }
    Ok(out)
}

/// The keys of `deploy:` the serde mirror (`raw::Service`) reads, moved to the service as
/// `x-from-deploy.<key>`; errors name them by their real path.
const MOVED_DEPLOY_KEYS: [&str; 4] = ["restart_policy", "replicas", "update_config", "mode"];
const MOVED_PREFIX: &str = "x-from-deploy.";

/// One file's tree, ready for layering.
fn prepare(
    file: &SourceFile,
    options: &LoadOptions<'_>,
    unset: &mut interpolate::Unset,
) -> Result<Value, ComposeError> {
    prepare_text(&file.text, &file.path, options, unset, &mut Vec::new())
}

/// The tree of the file at `path` (whose text is `text`): parsed, merge keys applied,
/// extensions dropped, interpolated, and what it includes or extends brought in. `chain`
/// holds the files that named this one.
fn prepare_text(
    text: &str,
    path: &Path,
    options: &LoadOptions<'_>,
    unset: &mut interpolate::Unset,
    chain: &mut Vec<PathBuf>,
) -> Result<Value, ComposeError> {
    let mut tree = tree::parse(text)?;
    tree::apply_merge_keys(&mut tree, &mut String::new())?;
    tree::strip_extensions(&mut tree);
    interpolate::tree(&mut tree, options.env, unset, &mut String::new())?;
    reference::resolve(&mut tree, path, options, unset, chain)?;
    Ok(tree)
}

/// Types `value` as `T`. A wrong type stops at once, with its key path; keys `T` has no
/// field for are collected into `unknown` (as key paths under `at`) instead, so that one run
/// can name every one of them.
pub(crate) fn typed_as<T: serde::de::DeserializeOwned>(
    value: Value,
    at: &str,
    unknown: &mut Vec<String>,
) -> Result<T, ComposeError> {
    let mut found = |path: serde_ignored::Path<'_>| unknown.push(join(at, &key_path(&path)));
    let ignored = serde_ignored::Deserializer::new(value, &mut found);
    serde_path_to_error::deserialize(ignored).map_err(|e| typing_error(e).under(at))
}

/// A path under `prefix`: `services.web` and `ports[0]` give `services.web.ports[0]`.
fn join(prefix: &str, path: &str) -> String {
    match (prefix, path) {
        (prefix, "") => prefix.to_owned(),
        ("", path) => path.to_owned(),
        (prefix, path) if path.starts_with('[') => format!("{prefix}{path}"),
        (prefix, path) => format!("{prefix}.{path}"),
    }
}

/// serde_ignored's path in our notation: `services.web.ports[0].mode`.
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => match key_path(parent) {
            p if p.is_empty() => key.to_string(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

/// Serde's error as ours, at its key path.
fn typing_error(e: serde_path_to_error::Error<serde_yaml::Error>) -> ComposeError {
    let path = e.path().to_string();
    let path = if path == "." { String::new() } else { path };
    ComposeError::at(path, e.into_inner().to_string())
}

/// Names the file an error comes from: the only file, or the last one that holds the path.
fn locate(
    mut e: ComposeError,
    files: &[SourceFile],
    trees: &[Value],
    merged: &Value,
) -> ComposeError {
    e.key_path = e.key_path.replace(MOVED_PREFIX, "deploy.");
    if e.file.is_some() {
        return e;
    }
    if files.len() == 1 {
        e.file = Some(files[0].path.clone());
        return e;
    }
    if !e.key_path.is_empty() {
        e.file = files
            .iter()
            .zip(trees)
            .rev()
            .find(|(_, t)| tree::contains_path(t, merged, &e.key_path))
            .map(|(f, _)| f.path.clone());
    }
    e
}
