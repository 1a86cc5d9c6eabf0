//! Compose files that name others: top-level `include:` (another project's resources,
//! brought in whole) and a service's `extends:` (another service's settings, refined), in
//! the same file or another one.
//!
//! Both are resolved in each file's own tree, before the files are layered, as the Compose
//! Specification orders it. A file named here is read through `LoadOptions::read`, so it
//! passes the same checks as the compose files themselves; the relative paths of what it
//! brings are rewritten to resolve from the including file's directory, where they then
//! meet the same policy as every other path.

use std::path::{Component, Path, PathBuf};

use serde_yaml::{Mapping, Value};

use super::interpolate::Unset;
use super::{ComposeError, LoadOptions, layer, mounts};

/// How deep files may name files (`include` in an included file, `extends` across files).
const MAX_DEPTH: usize = 8;

/// Reads a file that a compose file names, by its path as joined to that file's own path
/// (relative to the tree when the compose files' paths are); `None` when it is absent.
pub(crate) type Read<'a> = &'a dyn Fn(&Path) -> Result<Option<String>, String>;

/// A `Read` the caller owns, to hand over with the files it reads from.
pub(crate) type Reader = Box<dyn Fn(&Path) -> Result<Option<String>, String> + Send>;

/// Resolves `include:` and then `extends:` in `tree`, the prepared tree of `file`. `chain`
/// holds the files that led here, so a file that names itself, directly or not, is an
/// error rather than a loop.
pub(super) fn resolve(
    tree: &mut Value,
    file: &Path,
    options: &LoadOptions<'_>,
    unset: &mut Unset,
    chain: &mut Vec<PathBuf>,
) -> Result<(), ComposeError> {
    include(tree, file, options, unset, chain)?;
    extends(tree, file, options, unset, chain)
}

/// A file named by `file`, prepared and resolved in turn.
fn load(
    named: &str,
    key: &str,
    file: &Path,
    options: &LoadOptions<'_>,
    unset: &mut Unset,
    chain: &mut Vec<PathBuf>,
) -> Result<(PathBuf, Value), ComposeError> {
    let path = joined(file, named).map_err(|m| ComposeError::at(key, m))?;
    if chain.contains(&path) || chain.len() >= MAX_DEPTH {
        return Err(ComposeError::at(
            key,
            format!(
                "`{named}` leads back to a file that names it, or too deep (at most {MAX_DEPTH} files)"
            ),
        ));
    }
    let text = (options.read)(&path)
        .map_err(|m| ComposeError::at(key, format!("`{named}`: {m}")))?
        .ok_or_else(|| ComposeError::at(key, format!("`{named}` is not in the pushed tree")))?;
    chain.push(file.to_owned());
    let tree =
        super::prepare_text(&text, &path, options, unset, chain).map_err(|e| e.in_file(&path));
    chain.pop();
    Ok((path, tree?))
}

/// `file`'s directory joined with `named`, cleaned; a relative result may not climb out
/// of the tree.
fn joined(file: &Path, named: &str) -> Result<PathBuf, String> {
    if named.is_empty() {
        return Err("an empty path".to_owned());
    }
    if Path::new(named).is_absolute() || named.starts_with('~') {
        return Err(format!(
            "`{named}` is outside the repository: name a file of the repository by a path relative to this one"
        ));
    }
    let base = file.parent().unwrap_or(Path::new(""));
    let path = mounts::normalize(&base.join(named));
    if path.is_relative() && path.components().next() == Some(Component::ParentDir) {
        return Err(format!("`{named}` is outside the repository"));
    }
    Ok(path)
}

/// Where `to`'s directory is, seen from `from`'s: `common`, `../shared`, or empty.
fn relative_dir(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component> = from
        .parent()
        .unwrap_or(Path::new(""))
        .components()
        .collect();
    let to: Vec<Component> = to.parent().unwrap_or(Path::new("")).components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c.as_os_str());
    }
    out
}

// ---- include ----

fn include(
    tree: &mut Value,
    file: &Path,
    options: &LoadOptions<'_>,
    unset: &mut Unset,
    chain: &mut Vec<PathBuf>,
) -> Result<(), ComposeError> {
    let Value::Mapping(top) = tree else {
        return Ok(());
    };
    let Some(entries) = top.remove("include") else {
        return Ok(());
    };
    let Value::Sequence(entries) = entries else {
        return Err(ComposeError::at(
            "include",
            "must be a list of compose files",
        ));
    };
    for (i, entry) in entries.into_iter().enumerate() {
        let key = format!("include[{i}]");
        for named in include_paths(entry, &key)? {
            let (path, included) = load(&named, &key, file, options, unset, chain)?;
            let included = rebase_project(included, &relative_dir(file, &path));
            bring_in(top, included, &key, &named)?;
        }
    }
    Ok(())
}

/// The files of one `include:` entry: a path, or `{path: a path or a list}`.
fn include_paths(entry: Value, key: &str) -> Result<Vec<String>, ComposeError> {
    let text = |v: Value, at: &str| match v {
        Value::String(s) => Ok(s),
        _ => Err(ComposeError::at(at, "must be a path")),
    };
    match entry {
        Value::String(s) => Ok(vec![s]),
        Value::Mapping(mut m) => {
            let path = m
                .remove("path")
                .ok_or_else(|| ComposeError::at(key, "needs a `path`"))?;
            if let Some(other) = m.keys().next() {
                let other = other.as_str().unwrap_or("?");
                return Err(ComposeError::at(
                    format!("{key}.{other}"),
                    "not supported: an included file resolves its paths from its own directory and reads the project's variables",
                ));
            }
            match path {
                Value::Sequence(items) => (items.into_iter().enumerate())
                    .map(|(j, v)| text(v, &format!("{key}.path[{j}]")))
                    .collect(),
                other => Ok(vec![text(other, &format!("{key}.path"))?]),
            }
        }
        _ => Err(ComposeError::at(key, "must be a path or `{path: …}`")),
    }
}

/// The top-level sections an included file brings in.
const SECTIONS: [&str; 5] = ["services", "networks", "volumes", "secrets", "configs"];

/// Adds the included project's resources to `top`; a name defined on both sides is an
/// error, as compose makes it.
fn bring_in(
    top: &mut Mapping,
    included: Value,
    key: &str,
    named: &str,
) -> Result<(), ComposeError> {
    let Value::Mapping(mut included) = included else {
        return Ok(());
    };
    for section in SECTIONS {
        let Some(Value::Mapping(theirs)) = included.remove(section) else {
            continue;
        };
        let ours = top
            .entry(Value::from(section))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if ours.is_null() {
            *ours = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(ours) = ours else {
            continue;
        };
        for (name, value) in theirs {
            if ours.contains_key(&name) {
                let name = name.as_str().unwrap_or("?");
                return Err(ComposeError::at(
                    format!("{section}.{name}"),
                    format!("defined here and in `{named}`, which `{key}` brings in; rename one"),
                ));
            }
            ours.insert(name, value);
        }
    }
    Ok(())
}

/// An included project's relative paths, rewritten to resolve from the including file.
fn rebase_project(mut tree: Value, dir: &Path) -> Value {
    if dir.as_os_str().is_empty() {
        return tree;
    }
    if let Some(Value::Mapping(services)) = tree.get_mut("services") {
        for service in services.values_mut() {
            rebase_service(service, dir);
        }
    }
    for section in ["secrets", "configs"] {
        if let Some(Value::Mapping(entries)) = tree.get_mut(section) {
            for entry in entries.values_mut() {
                if let Some(Value::String(f)) = entry.get_mut("file") {
                    *f = rebased(dir, f);
                }
            }
        }
    }
    if let Some(Value::Mapping(volumes)) = tree.get_mut("volumes") {
        for volume in volumes.values_mut() {
            if let Some(Value::String(device)) = volume
                .get_mut("driver_opts")
                .and_then(|o| o.get_mut("device"))
                && device.starts_with('.')
            {
                *device = rebased(dir, device);
            }
        }
    }
    tree
}

/// `path`, written for a file in `dir`, as the including file reads it. A path that is
/// absolute or starts at home stays; others keep a leading `./` or `../`, so a volume source
/// still reads as a path.
fn rebased(dir: &Path, path: &str) -> String {
    if path.starts_with('/') || path.starts_with('~') {
        return path.to_owned();
    }
    let joined = mounts::normalize(&dir.join(path));
    let text = joined.to_string_lossy();
    match text.as_ref() {
        "" => ".".to_owned(),
        t if t.starts_with("..") => t.to_owned(),
        t => format!("./{t}"),
    }
}

/// A service's relative paths (build context, env files, bind sources), rebased.
fn rebase_service(service: &mut Value, dir: &Path) {
    let Value::Mapping(map) = service else {
        return;
    };
    match map.get_mut("build") {
        Some(Value::String(context)) => *context = rebased(dir, context),
        Some(Value::Mapping(build)) => {
            let context = match build.get("context") {
                Some(Value::String(c)) => c.clone(),
                _ => ".".to_owned(),
            };
            if !context.contains("://") {
                build.insert("context".into(), rebased(dir, &context).into());
            }
        }
        _ => {}
    }
    match map.get_mut("env_file") {
        Some(Value::String(f)) => *f = rebased(dir, f),
        Some(Value::Sequence(files)) => {
            for f in files {
                match f {
                    Value::String(f) => *f = rebased(dir, f),
                    Value::Mapping(m) => {
                        if let Some(Value::String(p)) = m.get_mut("path") {
                            *p = rebased(dir, p);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    if let Some(Value::Sequence(volumes)) = map.get_mut("volumes") {
        for v in volumes {
            match v {
                Value::String(short) if short.starts_with('.') => {
                    let (source, rest) = short.split_once(':').unwrap_or((short, ""));
                    let source = rebased(dir, source);
                    *short = match rest {
                        "" => source,
                        rest => format!("{source}:{rest}"),
                    };
                }
                Value::Mapping(long) => {
                    let bind = long.get("type").and_then(Value::as_str) == Some("bind");
                    if let (true, Some(Value::String(source))) = (bind, long.get_mut("source")) {
                        *source = rebased(dir, source);
                    }
                }
                _ => {}
            }
        }
    }
}

// ---- extends ----

fn extends(
    tree: &mut Value,
    file: &Path,
    options: &LoadOptions<'_>,
    unset: &mut Unset,
    chain: &mut Vec<PathBuf>,
) -> Result<(), ComposeError> {
    let Some(Value::Mapping(services)) = tree.get("services") else {
        return Ok(());
    };
    let services = services.clone();
    let extending: Vec<String> = (services.iter())
        .filter(|(_, s)| s.get("extends").is_some())
        .filter_map(|(name, _)| name.as_str().map(str::to_owned))
        .collect();
    let mut resolver = Extends {
        services: &services,
        file,
        options,
        unset,
        chain,
    };
    for name in extending {
        let resolved = resolver.service(&name, &mut Vec::new())?;
        if let Some(Value::Mapping(out)) = tree.get_mut("services") {
            out.insert(Value::from(name), resolved);
        }
    }
    Ok(())
}

struct Extends<'a, 'o> {
    /// The file's services as written.
    services: &'a Mapping,
    file: &'a Path,
    options: &'a LoadOptions<'o>,
    unset: &'a mut Unset,
    chain: &'a mut Vec<PathBuf>,
}

impl Extends<'_, '_> {
    /// Service `name` with its `extends` applied, recursively; `seen` holds the services of
    /// this file on the way, to refuse a cycle.
    fn service(&mut self, name: &str, seen: &mut Vec<String>) -> Result<Value, ComposeError> {
        let at = format!("services.{name}.extends");
        let Some(Value::Mapping(written)) = self.services.get(name) else {
            return Ok(self.services.get(name).cloned().unwrap_or(Value::Null));
        };
        let mut service = written.clone();
        let Some(spec) = service.remove("extends") else {
            return Ok(Value::Mapping(service));
        };
        let (base_name, base_file) = extends_target(spec, &at)?;
        let base = match base_file {
            Some(named) => {
                let key = format!("{at}.file");
                let (path, other) = load(
                    &named,
                    &key,
                    self.file,
                    self.options,
                    self.unset,
                    self.chain,
                )?;
                let mut base = other
                    .get("services")
                    .and_then(|s| s.get(base_name.as_str()))
                    .cloned()
                    .ok_or_else(|| {
                        ComposeError::at(
                            format!("{at}.service"),
                            format!("`{named}` has no service `{base_name}`"),
                        )
                    })?;
                rebase_service(&mut base, &relative_dir(self.file, &path));
                base
            }
            None => {
                if seen.iter().any(|s| s == name) {
                    return Err(ComposeError::at(
                        &at,
                        format!(
                            "`{}` → `{name}`: these services extend each other in a loop",
                            seen.join("` → `")
                        ),
                    ));
                }
                if !self.services.contains_key(base_name.as_str()) {
                    return Err(ComposeError::at(
                        format!("{at}.service"),
                        format!("there is no service `{base_name}` in this file"),
                    ));
                }
                seen.push(name.to_owned());
                let base = self.service(&base_name, seen)?;
                seen.pop();
                base
            }
        };
        Ok(refine(name, base, Value::Mapping(service)))
    }
}

/// `extends: NAME` or `extends: {service: NAME, file: PATH}`.
fn extends_target(spec: Value, at: &str) -> Result<(String, Option<String>), ComposeError> {
    match spec {
        Value::String(service) => Ok((service, None)),
        Value::Mapping(mut m) => {
            let service = match m.remove("service") {
                Some(Value::String(s)) => s,
                _ => return Err(ComposeError::at(at, "needs `service: NAME`")),
            };
            let file = match m.remove("file") {
                None => None,
                Some(Value::String(f)) => Some(f),
                Some(_) => return Err(ComposeError::at(format!("{at}.file"), "must be a path")),
            };
            if let Some(other) = m.keys().next() {
                let other = other.as_str().unwrap_or("?");
                return Err(ComposeError::at(format!("{at}.{other}"), "not supported"));
            }
            Ok((service, file))
        }
        _ => Err(ComposeError::at(
            at,
            "must be a service name or `{service: …, file: …}`",
        )),
    }
}

/// `over` layered onto `base` by the rules of layered files, at the service's own path.
fn refine(name: &str, base: Value, over: Value) -> Value {
    let wrap = |v: Value| {
        let mut services = Mapping::new();
        services.insert(Value::from(name), v);
        let mut top = Mapping::new();
        top.insert("services".into(), Value::Mapping(services));
        Value::Mapping(top)
    };
    let merged = layer::merge(wrap(base), wrap(over));
    merged
        .get("services")
        .and_then(|s| s.get(name))
        .cloned()
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_rebased_to_the_including_file() {
        let dir = Path::new("common");
        assert_eq!(rebased(dir, "./data"), "./common/data");
        assert_eq!(rebased(dir, "."), "./common");
        assert_eq!(rebased(dir, "../x"), "./x");
        assert_eq!(rebased(Path::new("../up"), "y"), "../up/y");
        assert_eq!(rebased(dir, "/abs"), "/abs");
        assert_eq!(rebased(dir, "~/home"), "~/home");
    }

    #[test]
    fn relative_dirs() {
        let rel = |a: &str, b: &str| relative_dir(Path::new(a), Path::new(b));
        assert_eq!(
            rel("docker-compose.yml", "common/base.yml"),
            Path::new("common")
        );
        assert_eq!(rel("ops/compose.yml", "base.yml"), Path::new(".."));
        assert_eq!(rel("ops/compose.yml", "ops/base.yml"), Path::new(""));
    }

    #[test]
    fn a_named_file_stays_in_the_repository() {
        assert!(joined(Path::new("compose.yml"), "../etc/x.yml").is_err());
        assert!(joined(Path::new("ops/compose.yml"), "../base.yml").is_ok());
        assert!(joined(Path::new("compose.yml"), "").is_err());
        assert!(joined(Path::new("compose.yml"), "/etc/compose.yml").is_err());
    }
}
