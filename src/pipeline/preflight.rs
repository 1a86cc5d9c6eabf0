//! Checks run before anything is built or stopped, and shared with `deploy config`: every
//! path the compose file names judged by the security policy where it really leads, every
//! name it uses judged against what other projects own, the files it names read with bounds,
//! and free space for the build.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::Digest;

use super::confine::{self, HostFile};
use super::load::Loaded;
use crate::compose::policy::{
    self, Foreign, ForeignImage, Host, Layout, PolicyError, Use, Writable,
};
use crate::compose::spec::{Config, Mount, Ownership};
use crate::compose::{ComposeError, Spec, envfile};
use crate::docker::Docker;
use crate::docker::build::BuildSecrets;
use crate::docker::observe;
use crate::ids::{ProjectName, ServiceName};
use crate::plan::names;
use crate::report::Reporter;
use crate::root::Root;
use crate::settings::Settings;

/// A secret shorter than this would turn every such letter of every log into `***`.
const MIN_SECRET_LEN: usize = 4;

/// A spec that passed every check, with its paths resolved and its env files read.
pub(crate) struct Checked {
    pub(crate) spec: Spec,
    /// Secret and config files in a directory a container can write to: mounted from a copy
    /// taken now, since the original could be swapped after the check.
    copies: Vec<Copy>,
    /// The values of the secrets a build reads, as read (and registered for redaction)
    /// here: a build never opens a secret file again.
    build_secrets: BuildSecrets,
    /// Secret and config mounts with their own `uid`, `gid` or `mode`: each gets a copy.
    owned: Vec<Owned>,
}

struct Copy {
    of: Copied,
    text: String,
}

/// A service's secret (`secret`) or config mount, `index` in its list, with its own owner
/// or mode, and the file's text as checked.
struct Owned {
    service: ServiceName,
    secret: bool,
    index: usize,
    text: String,
}

enum Copied {
    Secret(String),
    Config(String),
}

/// Judges `spec` (as loaded, with `env` its interpolation variables) and reads the files it
/// names. Secret values are registered with the reporter for redaction as they are read.
pub(crate) async fn check(
    root: &Root,
    settings: &Settings,
    project: &ProjectName,
    loaded: Loaded,
    docker: &Docker,
    reporter: &Reporter,
) -> anyhow::Result<Checked> {
    let Loaded {
        spec,
        env,
        mut refusals,
    } = loaded;
    // The disk's part runs off the async runtime: resolving every path, then (below) the
    // files the spec names.
    let (layout, mut spec) = {
        let (root, settings) = (root.clone(), settings.clone());
        super::blocking(move || {
            let layout = confine::layout(&root, &settings)?;
            let mut spec = spec;
            confine::resolve_paths(&mut spec);
            anyhow::Ok((layout, spec))
        })
        .await??
    };
    let writable = writable(docker, &spec).await?;
    let foreign = foreign(docker, project, settings, &spec).await?;
    let host = Host {
        layout: &layout,
        allow: &settings.allow,
        writable: &writable,
        foreign: &foreign,
        settings_file: &root.settings_file(),
    };
    if let Err(e) = policy::check(&spec, &host) {
        refusals.extend(e.refusals);
    }
    if !refusals.is_empty() {
        return Err(PolicyError {
            refusals,
            settings_file: root.settings_file(),
        }
        .into());
    }
    let (settings, reporter) = (settings.clone(), reporter.clone());
    super::blocking(move || {
        envfile::merge_into(&mut spec, &env, |file| {
            let limit = settings.file_size_limit;
            let read = confine::read(&file.path, Use::EnvFile, &layout, &settings, limit);
            read.map(|f| f.map(|f| f.text))
                .map_err(|e| ComposeError::at(&file.key_path, e.to_string()))
        })?;
        let (copies, owned, build_secrets) =
            read_mounted_files(&spec, &layout, &settings, &writable, &reporter)?;
        Ok(Checked {
            spec,
            copies,
            build_secrets,
            owned,
        })
    })
    .await?
}

/// Directories containers can write to: the read-write bind mounts of every running
/// container on the host, and those this spec asks for.
async fn writable(docker: &Docker, spec: &Spec) -> anyhow::Result<Vec<Writable>> {
    let mut out = Vec::new();
    for (source, by) in observe::writable_binds(docker).await? {
        let lexical = PathBuf::from(&source);
        let real = confine::resolve(&lexical);
        if real != lexical {
            out.push(Writable {
                dir: lexical,
                by: by.clone(),
            });
        }
        out.push(Writable { dir: real, by });
    }
    for (name, svc) in &spec.services {
        for (i, m) in svc.volumes.iter().enumerate() {
            let by = || format!("the service `{name}` (`services.{name}.volumes[{i}]`)");
            match m {
                Mount::Bind {
                    source,
                    read_only: false,
                    ..
                } => out.push(Writable {
                    dir: source.clone(),
                    by: by(),
                }),
                Mount::Volume {
                    source: Some(key),
                    read_only: false,
                    ..
                } => {
                    if let Some(device) = spec.volumes.get(key).and_then(bind_device) {
                        out.push(Writable {
                            dir: device,
                            by: by(),
                        });
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// The host directory a named volume binds, if its `driver_opts` bind one.
fn bind_device(volume: &crate::compose::spec::Volume) -> Option<PathBuf> {
    let bind = volume.driver_opts.get("o")?.split(',').any(|o| {
        let o = o.trim();
        o == "bind" || o == "rbind"
    });
    bind.then(|| volume.driver_opts.get("device").map(PathBuf::from))
        .flatten()
}

/// The Docker objects `spec` names that are not this project's.
async fn foreign(
    docker: &Docker,
    project: &ProjectName,
    settings: &Settings,
    spec: &Spec,
) -> anyhow::Result<Foreign> {
    let (networks, volumes) = observe::foreign_names(docker, project).await?;
    let mut images = BTreeMap::new();
    for (name, svc) in &spec.services {
        if svc.build.is_some() {
            let repo = names::image_repo(project, name, svc.image.as_deref());
            if settings.allow.image_names.contains(&repo) {
                continue;
            }
            let others: Vec<String> = observe::repo_images(docker, &repo)
                .await?
                .into_iter()
                .filter(|(_, owner)| owner.as_deref() != Some(project.as_str()))
                .map(|(tag, _)| format!("`{tag}`"))
                .collect();
            if !others.is_empty() {
                let reason = format!(
                    "the image repository `{repo}` already holds images that are not this project's ({}): a build would re-tag what someone else runs; name the image differently",
                    others.join(", ")
                );
                images.insert(name.clone(), ForeignImage { repo, reason });
            }
        } else if let Some(image) = &svc.image
            && let Some(Some(owner)) = observe::image_project(docker, image).await?
            && owner != project.as_str()
        {
            let reason = format!(
                "`{image}` was built by the project `{owner}`: a service may run its own project's images, or images no project built"
            );
            let repo = names::split_tag(image).0.to_owned();
            images.insert(name.clone(), ForeignImage { repo, reason });
        }
    }
    Ok(Foreign {
        images,
        volumes,
        networks,
        cache_images: cache_images(docker, project, spec).await?,
    })
}

/// The `build.cache_from` images another project built: their layers may hold what that
/// project's build secrets fetched.
async fn cache_images(
    docker: &Docker,
    project: &ProjectName,
    spec: &Spec,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let named = spec
        .services
        .values()
        .filter_map(|s| s.build.as_ref())
        .flat_map(|b| &b.cache_from);
    for image in named {
        if let Some(Some(owner)) = observe::image_project(docker, image).await?
            && owner != project.as_str()
        {
            let reason = format!(
                "`{image}` was built by the project `{owner}`: a build may reuse the layers of its own project's images, or of images no project built"
            );
            out.insert(image.clone(), reason);
        }
    }
    Ok(out)
}

/// Reads every secret and `file:` config: each must be a regular file within the size
/// limit, where the policy allows. Secret values (and anything read from `.secrets/`) are
/// registered for redaction; a file in a directory a container can write to is copied.
fn read_mounted_files(
    spec: &Spec,
    layout: &Layout,
    settings: &Settings,
    writable: &[Writable],
    reporter: &Reporter,
) -> anyhow::Result<(Vec<Copy>, Vec<Owned>, BuildSecrets)> {
    let for_builds: Vec<&str> = spec
        .services
        .values()
        .filter_map(|s| s.build.as_ref())
        .flat_map(|b| b.secrets.iter().map(|s| s.source.as_str()))
        .collect();
    let mut build_secrets = BuildSecrets::default();
    let mut files: Vec<(String, &Path, Copied)> = Vec::new();
    for (name, secret) in &spec.secrets {
        let key = format!("secrets.{name}.file");
        files.push((key, &secret.file, Copied::Secret(name.clone())));
    }
    for (name, config) in &spec.configs {
        if let Config::File(file) = config {
            let key = format!("configs.{name}.file");
            files.push((key, file, Copied::Config(name.clone())));
        }
    }
    let mut copies = Vec::new();
    let mut owned = Vec::new();
    for (name, config) in &spec.configs {
        if let Config::Content(text) = config {
            owned.extend(owned_mounts(spec, &Copied::Config(name.clone()), text));
        }
    }
    for (key, path, of) in files {
        let file = match confine::read(path, Use::File, layout, settings, settings.file_size_limit)
        {
            Ok(Some(file)) => file,
            Ok(None) if matches!(of, Copied::Secret(_)) => bail!(
                "{key}: `{}` does not exist; put the file there on the server (it is never pushed)",
                path.display()
            ),
            Ok(None) => bail!("{key}: `{}` does not exist", path.display()),
            Err(e) => bail!("{key}: {e}"),
        };
        if file.real != path {
            bail!(
                "{key}: `{}` changed while it was checked; push again",
                path.display()
            );
        }
        let secret = matches!(of, Copied::Secret(_)) || file.real.starts_with(&layout.secrets);
        if secret {
            register_secret(&key, &file, reporter)?;
        }
        if let Copied::Secret(name) = &of
            && for_builds.contains(&name.as_str())
        {
            build_secrets.insert(name.clone(), file.text.clone());
        }
        owned.extend(owned_mounts(spec, &of, &file.text));
        let swappable = writable
            .iter()
            .any(|w| path != w.dir && path.starts_with(&w.dir));
        if swappable {
            copies.push(Copy {
                of,
                text: file.text,
            });
        }
    }
    Ok((copies, owned, build_secrets))
}

/// The mounts of the secret or config `of` that set their own owner or mode.
fn owned_mounts(spec: &Spec, of: &Copied, text: &str) -> Vec<Owned> {
    let mut out = Vec::new();
    for (service, svc) in &spec.services {
        let mounts: Vec<(bool, &Ownership)> = match of {
            Copied::Secret(name) => (svc.secrets.iter())
                .map(|m| (m.source == *name, &m.owner))
                .collect(),
            Copied::Config(name) => (svc.configs.iter())
                .map(|m| (m.source == *name, &m.owner))
                .collect(),
        };
        for (index, (mine, owner)) in mounts.into_iter().enumerate() {
            if mine && owner.is_set() {
                out.push(Owned {
                    service: service.clone(),
                    secret: matches!(of, Copied::Secret(_)),
                    index,
                    text: text.to_owned(),
                });
            }
        }
    }
    out
}

fn register_secret(key: &str, file: &HostFile, reporter: &Reporter) -> anyhow::Result<()> {
    if file.text.trim().chars().count() < MIN_SECRET_LEN {
        bail!(
            "{key}: the secret in `{}` is shorter than {MIN_SECRET_LEN} characters; it could not be told apart from ordinary text in the logs, so use a longer one",
            file.real.display()
        );
    }
    reporter.redact(&file.text);
    Ok(())
}

/// Writes what a checked spec needs on disk before any container mounts it: copies of
/// swappable files, `content:` configs, and missing bind sources. Returns the spec to plan.
pub(crate) fn prepare(root: &Root, checked: Checked) -> anyhow::Result<(Spec, BuildSecrets)> {
    let Checked {
        mut spec,
        copies,
        build_secrets,
        owned,
    } = checked;
    for o in owned {
        write_owned(root, &mut spec, o)?;
    }
    for copy in copies {
        let path = root.mounts().join(named_by(&copy.text));
        write_own_file(&path, &copy.text)?;
        match copy.of {
            Copied::Secret(name) => {
                if let Some(s) = spec.secrets.get_mut(&name) {
                    s.file = path;
                }
            }
            Copied::Config(name) => {
                spec.configs.insert(name, Config::File(path));
            }
        }
    }
    write_content_configs(root, &spec)?;
    create_bind_sources(&spec)?;
    Ok((spec, build_secrets))
}

/// Creates missing bind-mount sources as empty directories, as docker-compose has Docker do
/// for `./data:/data`: a directory a repository cannot track when empty (or ignores) must
/// not fail the deploy. The policy has already judged each real path.
fn create_bind_sources(spec: &Spec) -> anyhow::Result<()> {
    for (name, svc) in &spec.services {
        for m in &svc.volumes {
            if let Mount::Bind { source, .. } = m
                && std::fs::symlink_metadata(source).is_err()
            {
                std::fs::create_dir_all(source).with_context(|| {
                    format!(
                        "services.{name}.volumes: failed to create the missing bind source `{}`",
                        source.display()
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// Writes each `content:` config to `ROOT/configs/<name>`, where its container mounts it.
fn write_content_configs(root: &Root, spec: &Spec) -> anyhow::Result<()> {
    for (name, config) in &spec.configs {
        if let Config::Content(text) = config {
            if name.contains('/') || name.starts_with('.') {
                bail!(
                    "configs.{name}: a config with `content:` needs a plain name (no `/`, no leading `.`)"
                );
            }
            write_own_file(&root.configs().join(name), text)?;
        }
    }
    Ok(())
}

/// Writes the copy of a secret or config that a mount with its own `uid`, `gid` or `mode`
/// gets, under `ROOT/mounts/`, named by what it holds, and points the mount at it. Without
/// a `mode`, the file is readable by all (`0444`), as compose mounts secrets.
fn write_owned(root: &Root, spec: &mut Spec, o: Owned) -> anyhow::Result<()> {
    let Some(svc) = spec.services.get_mut(&o.service) else {
        return Ok(());
    };
    let owner = match o.secret {
        true => svc.secrets.get_mut(o.index).map(|m| &mut m.owner),
        false => svc.configs.get_mut(o.index).map(|m| &mut m.owner),
    };
    let Some(owner) = owner else {
        return Ok(());
    };
    let mode = owner.mode.unwrap_or(0o444);
    let recipe = format!("{:?}:{:?}:{mode:o}:{}", owner.uid, owner.gid, o.text);
    let path = root.mounts().join(format!("owned-{}", named_by(&recipe)));
    write_file(&path, &o.text, mode, (owner.uid, owner.gid))?;
    owner.copy = Some(path);
    Ok(())
}

/// The name of a copy in `ROOT/mounts/`: a digest of what it holds, so equal copies share
/// one file and a changed one gets a new name.
fn named_by(content: &str) -> String {
    let digest = sha2::Sha256::digest(content.as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Writes a file in a directory of `deploy`'s own without following anything planted
/// there: a new temporary file (never an existing one, never through a symlink), then a
/// rename over the name, which replaces a symlink rather than writing where it points.
fn write_own_file(path: &Path, text: &str) -> anyhow::Result<()> {
    write_file(path, text, 0o644, (None, None))
}

/// `write_own_file` with a mode and an owner, set on the new file before it takes the name.
fn write_file(
    path: &Path,
    text: &str,
    mode: u32,
    (uid, gid): (Option<u32>, Option<u32>),
) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("failed to create `{}`", dir.display()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(text.as_bytes())?;
            std::os::unix::fs::fchown(&f, uid, gid)?;
            f.set_permissions(
                <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(mode),
            )?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("failed to write `{}`: {e}", path.display())
    })
}

/// Refuses to build when the disk holding Docker's data is nearly full: a full disk breaks
/// the running stack too. The build cache counts: what it holds beyond `build_cache` would
/// go after the deploy anyway, so it goes first, and the refusal says what it still holds.
pub(crate) async fn free_space(
    docker: &Docker,
    settings: &Settings,
    reporter: &Reporter,
) -> anyhow::Result<()> {
    let dir = observe::data_root(docker).await?;
    if free_bytes(&dir)? >= settings.min_free_space {
        return Ok(());
    }
    super::retention::prune_cache(docker, settings.build_cache, reporter).await?;
    let free = free_bytes(&dir)?;
    if free < settings.min_free_space {
        let human = crate::compose::bytes::human;
        let cache = crate::docker::cache::usage(docker)
            .await
            .map_or_else(|_| "an unknown amount".to_owned(), human);
        bail!(
            "only {} free in `{dir}`, below the {} a build needs (the build cache holds {cache}, at most `build_cache` {}); free some space (`docker system prune`), or lower `min_free_space` or `build_cache` in ROOT/deploy.yml",
            human(free),
            human(settings.min_free_space),
            human(settings.build_cache)
        );
    }
    Ok(())
}

fn free_bytes(dir: &str) -> anyhow::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(Path::new(dir))
        .with_context(|| format!("failed to read the free space of `{dir}`"))?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}
