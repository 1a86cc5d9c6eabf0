//! Host paths and service `volumes:` entries (short and long syntax).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use super::raw;
use super::spec::{Mount, Volume};

/// What resolving paths needs: the project directory and the env for `~`.
pub(crate) struct PathContext<'a> {
    pub(crate) project_dir: &'a Path,
    pub(crate) home: Option<&'a str>,
}

impl PathContext<'_> {
    /// Resolves a path as written in the compose file: `~` is the home directory, relative
    /// paths are relative to the project directory. The result is absolute and has no `.`
    /// or `..` left, without touching the filesystem (symlinks are the pipeline's concern).
    pub(crate) fn resolve(&self, written: &str) -> Result<PathBuf, String> {
        let expanded = if written == "~" || written.starts_with("~/") {
            let home = self
                .home
                .ok_or_else(|| format!("cannot expand `~` in `{written}`: `HOME` is not set"))?;
            PathBuf::from(format!("{home}{}", &written[1..]))
        } else if written.starts_with('~') {
            return Err(format!(
                "`{written}` names another user's home directory, which is not supported"
            ));
        } else {
            PathBuf::from(written)
        };
        Ok(normalize(&self.project_dir.join(expanded)))
    }
}

/// Removes `.` and `..` lexically. `..` above the root stays at the root, as the kernel does.
pub(crate) fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Prefix(_) | Component::RootDir => out.push(c.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() && !out.has_root() {
                    out.push("..");
                }
            }
            Component::Normal(part) => out.push(part),
        }
    }
    out
}

/// Short syntax: `SOURCE:TARGET[:MODE]` or an anonymous `TARGET`.
pub(crate) fn parse_short(
    entry: &str,
    paths: &PathContext<'_>,
    volumes: &BTreeMap<String, Volume>,
) -> Result<Mount, String> {
    let parts: Vec<&str> = entry.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [target] => (None, *target, None),
        [source, target] => (Some(*source), *target, None),
        [source, target, mode] => (Some(*source), *target, Some(*mode)),
        _ => {
            return Err(format!(
                "`{entry}` is not a volume (use forms like `./data:/data`, `name:/data:ro` or `/data`)"
            ));
        }
    };
    let target = container_path(target)?;
    let (read_only, propagation) = match mode {
        None => (false, None),
        Some(mode) => options(mode)?,
    };
    if propagation.is_some() && !source.is_some_and(is_host_path) {
        return Err(format!(
            "`{entry}`: only a bind mount has a propagation mode"
        ));
    }
    match source {
        None => Ok(Mount::Volume {
            source: None,
            target,
            read_only,
        }),
        Some("") => Err(format!("`{entry}` has an empty source")),
        Some(s) if is_host_path(s) => Ok(Mount::Bind {
            source: paths.resolve(s)?,
            target,
            read_only,
            propagation,
        }),
        Some(name) => {
            declared(name, volumes)?;
            Ok(Mount::Volume {
                source: Some(name.to_owned()),
                target,
                read_only,
            })
        }
    }
}

/// Long syntax: `{type, source, target, read_only}`.
pub(crate) fn parse_long(
    long: &raw::Mount,
    paths: &PathContext<'_>,
    volumes: &BTreeMap<String, Volume>,
) -> Result<Mount, String> {
    let target = container_path(&long.target)?;
    let read_only = long.read_only.is_some_and(|f| f.0);
    let source = long.source.as_deref().filter(|s| !s.is_empty());
    match long.kind {
        raw::MountType::Bind => {
            let source = source.ok_or("a `bind` mount needs a `source`")?;
            let propagation = long.bind.as_ref().and_then(|b| b.propagation.as_deref());
            Ok(Mount::Bind {
                source: paths.resolve(source)?,
                target,
                read_only,
                propagation: propagation.map(propagation_mode).transpose()?,
            })
        }
        raw::MountType::Image => Err(
            "`type: image` mounts need Docker Engine 28 or later (API 1.48); copy the files into the image with a build stage instead".to_owned(),
        ),
        raw::MountType::Volume => {
            if let Some(name) = source {
                declared(name, volumes)?;
            }
            Ok(Mount::Volume {
                source: source.map(str::to_owned),
                target,
                read_only,
            })
        }
        raw::MountType::Tmpfs => {
            if source.is_some() {
                return Err("a `tmpfs` mount takes no `source`".to_owned());
            }
            if read_only {
                return Err("a `tmpfs` mount cannot be `read_only`".to_owned());
            }
            Ok(Mount::Tmpfs { target })
        }
    }
}

/// docker-compose's rule: a source that looks like a path is a bind mount, anything else
/// names a volume.
fn is_host_path(source: &str) -> bool {
    source.starts_with(['.', '/', '~'])
}

fn declared(name: &str, volumes: &BTreeMap<String, Volume>) -> Result<(), String> {
    if volumes.contains_key(name) {
        Ok(())
    } else {
        Err(format!(
            "volume `{name}` is not declared under top-level `volumes` (add `volumes: {{{name}: {{}}}}`, or write `./{name}` for a directory of the project)"
        ))
    }
}

fn container_path(target: &str) -> Result<String, String> {
    if !target.starts_with('/') {
        return Err(format!(
            "the container path `{target}` must be absolute (start with `/`)"
        ));
    }
    Ok(normalize(Path::new(target)).to_string_lossy().into_owned())
}

/// A bind's propagation mode, as the kernel names them.
fn propagation_mode(mode: &str) -> Result<String, String> {
    match mode {
        "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => Ok(mode.to_owned()),
        other => Err(format!(
            "`{other}` is not a propagation mode (use `rprivate`, `private`, `rshared`, `shared`, `rslave` or `slave`)"
        )),
    }
}

/// A short entry's options: `ro` or `rw`, and a bind's propagation mode (`ro,rslave`).
fn options(mode: &str) -> Result<(bool, Option<String>), String> {
    let mut ro = None;
    let mut propagation = None;
    for flag in mode.split(',') {
        let this = match flag {
            "ro" => true,
            "rw" => false,
            other if propagation_mode(other).is_ok() && propagation.is_none() => {
                propagation = Some(other.to_owned());
                continue;
            }
            other => {
                return Err(format!(
                    "mount option `{other}` is not supported (use `ro` or `rw`, and a propagation mode such as `rslave`)"
                ));
            }
        };
        if ro.is_some_and(|prev| prev != this) {
            return Err(format!("`{mode}` is both read-only and read-write"));
        }
        ro = Some(this);
    }
    Ok((ro.unwrap_or(false), propagation))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> PathContext<'static> {
        PathContext {
            project_dir: Path::new("/srv/app/code"),
            home: Some("/home/deploy"),
        }
    }

    #[test]
    fn resolves_lexically() {
        let c = ctx();
        assert_eq!(
            c.resolve("../db-data").unwrap(),
            Path::new("/srv/app/db-data")
        );
        assert_eq!(
            c.resolve("./a/./b/../c").unwrap(),
            Path::new("/srv/app/code/a/c")
        );
        assert_eq!(c.resolve("/../../etc").unwrap(), Path::new("/etc"));
        assert_eq!(c.resolve("~/x").unwrap(), Path::new("/home/deploy/x"));
        assert!(c.resolve("~bob/x").is_err());
        assert_eq!(c.resolve("../../../../..").unwrap(), Path::new("/"));
    }

    #[test]
    fn short_syntax() {
        let c = ctx();
        let vols: BTreeMap<String, Volume> = [("data".to_owned(), Volume::default())].into();
        assert_eq!(
            parse_short("./x:/x:ro", &c, &vols).unwrap(),
            Mount::Bind {
                source: "/srv/app/code/x".into(),
                target: "/x".into(),
                read_only: true,
                propagation: None,
            }
        );
        assert_eq!(
            parse_short("data:/var/lib/data/", &c, &vols).unwrap(),
            Mount::Volume {
                source: Some("data".into()),
                target: "/var/lib/data".into(),
                read_only: false
            }
        );
        assert_eq!(
            parse_short("/cache", &c, &vols).unwrap(),
            Mount::Volume {
                source: None,
                target: "/cache".into(),
                read_only: false
            }
        );
        assert!(
            parse_short("other:/x", &c, &vols)
                .unwrap_err()
                .contains("not declared")
        );
        assert!(parse_short("./x:rel", &c, &vols).is_err());
        assert!(parse_short("./x:/x:z", &c, &vols).is_err());
        assert!(parse_short("a:b:c:d", &c, &vols).is_err());
    }
}
