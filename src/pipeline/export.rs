//! Moving a whole host: `deploy export FILE` writes one tar of what brings the app up
//! elsewhere (the bare repo, `deploy.yml` and its env file, `code/.secrets`, a copy of the
//! ledger, the build logs, and a fresh dump of every database, under the ROOT lock);
//! `deploy import FILE ROOT` unpacks it into a new root, which the caller then deploys with
//! the dumps restored. The archive holds secrets: it is created with mode 0600.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::{backups, blocking, lock};
use crate::ledger::{BackupReason, Ledger};
use crate::report::Reporter;
use crate::root::Root;
use crate::settings::Settings;

/// What the archive holds besides the files: read first by `import`.
const MANIFEST: &str = "deploy-export.json";

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// `deploy`'s version and commit that wrote it.
    pub(crate) written_by: String,
    /// The live revision: what `import` deploys.
    pub(crate) live: String,
    /// The fresh dumps, by service (file names under `backups/`).
    pub(crate) dumps: BTreeMap<String, String>,
}

/// Writes the archive of `root` to `file`; returns its size.
pub(crate) async fn export(root: &Root, file: &Path, reporter: &Reporter) -> anyhow::Result<u64> {
    let settings = Settings::load(root)?;
    let _lock = lock::acquire(&root.lock_file(), "an export", reporter).await?;
    let ledger = Ledger::open(&root.ledger_file()).await?;
    let Some(live) = ledger.last_succeeded().await? else {
        bail!("nothing is deployed yet: there is nothing to export");
    };
    let dumps = backups::take_locked(root, BackupReason::Export, None, reporter).await?;
    let copy = root.path().join(".export-ledger.db");
    let _ = std::fs::remove_file(&copy);
    ledger.copy_to(&copy).await?;
    let manifest = Manifest {
        written_by: crate::cli::VERSION.to_owned(),
        live: live.revision.to_string(),
        dumps: dumps
            .iter()
            .map(|b| (b.service.clone(), b.file.clone()))
            .collect(),
    };
    let (root2, file2, copy2) = (root.clone(), file.to_path_buf(), copy.clone());
    let env_file = settings.env_file.clone();
    let written =
        blocking(move || write(&root2, &file2, &copy2, env_file.as_deref(), &manifest)).await;
    let _ = std::fs::remove_file(&copy);
    written?
}

fn write(
    root: &Root,
    file: &Path,
    ledger_copy: &Path,
    env_file: Option<&Path>,
    manifest: &Manifest,
) -> anyhow::Result<u64> {
    let out = File::options()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(file)
        .with_context(|| format!("failed to create `{}`", file.display()))?;
    // A file that existed keeps its mode on open: make it private all the same.
    out.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(out));
    tar.follow_symlinks(false);
    let repo = std::fs::canonicalize(root.repo())
        .with_context(|| format!("failed to resolve `{}`", root.repo().display()))?;
    tar.append_dir_all("code.git", &repo)?;
    add_file(&mut tar, &root.settings_file(), "deploy.yml")?;
    if let Some(env) = env_file.filter(|p| p.is_relative()) {
        add_file(&mut tar, &root.path().join(env), &env.to_string_lossy())?;
    }
    if root.secrets().is_dir() {
        tar.append_dir_all("code/.secrets", root.secrets())?;
    }
    tar.append_path_with_name(ledger_copy, "deploy.db")?;
    if root.build_logs().is_dir() {
        tar.append_dir_all("build-logs", root.build_logs())?;
    }
    for name in manifest.dumps.values() {
        tar.append_path_with_name(root.backups().join(name), format!("backups/{name}"))?;
    }
    let json = serde_json::to_vec_pretty(manifest)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o600);
    header.set_cksum();
    tar.append_data(&mut header, MANIFEST, json.as_slice())?;
    let out = tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    out.sync_all()?;
    Ok(out.metadata()?.len())
}

fn add_file(
    tar: &mut tar::Builder<impl std::io::Write>,
    path: &Path,
    name: &str,
) -> anyhow::Result<()> {
    if path.is_file() {
        tar.append_path_with_name(path, name)
            .with_context(|| format!("failed to add `{}`", path.display()))?;
    }
    Ok(())
}

/// Unpacks an archive of `export` into `root`, which must not exist or be empty. Only
/// plain files and directories at relative paths inside it are taken; links are skipped.
pub(crate) async fn unpack(file: &Path, root: &Root) -> anyhow::Result<Manifest> {
    let (file, dir) = (file.to_path_buf(), root.path().to_path_buf());
    blocking(move || unpack_into(&file, &dir)).await?
}

fn unpack_into(file: &Path, dir: &Path) -> anyhow::Result<Manifest> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("`{}` is not empty: import into a new root", dir.display());
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("failed to create `{}`", dir.display()))?;
    let input = File::open(file).with_context(|| format!("failed to open `{}`", file.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(input));
    archive.set_preserve_permissions(true);
    let mut manifest = None;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path: PathBuf = entry.path()?.into_owned();
        if !path.components().all(|c| matches!(c, Component::Normal(_))) {
            bail!(
                "`{}` holds `{}`, outside the root: not an export",
                file.display(),
                path.display()
            );
        }
        let kind = entry.header().entry_type();
        if path == Path::new(MANIFEST) {
            manifest = Some(serde_json::from_reader(&mut entry).context("unreadable manifest")?);
            continue;
        }
        // `build-logs/latest`: the next deploy points it again. No link is made from an
        // archive, so none can lead out of the root.
        if kind.is_symlink() {
            continue;
        }
        if !(kind.is_file() || kind.is_dir()) {
            bail!(
                "`{}` holds `{}`, which is neither a file nor a directory",
                file.display(),
                path.display()
            );
        }
        entry.unpack_in(dir)?;
    }
    manifest.with_context(|| {
        format!(
            "`{}` has no {MANIFEST}: it was not written by `deploy export`",
            file.display()
        )
    })
}
