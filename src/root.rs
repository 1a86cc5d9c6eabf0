//! The host layout under ROOT: where every file `deploy` reads or writes lives.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::ids::EnvName;

/// A deploy root (`/bpt/production`, say), seen from one of its environments. Only paths are
/// computed here; nothing is created.
///
/// The repo, `deploy.yml`, the lock and the daemon's socket are the ROOT's, shared by its
/// environments. The rest (work tree, secrets, data, ledger, build logs, dumps) is the
/// environment's: `production` keeps the layout of a host set up before environments
/// existed (`ROOT/code`, `ROOT/db-data`, …), every other environment has the same layout
/// under `ROOT/envs/<name>/`.
#[derive(Clone, Debug)]
pub(crate) struct Root {
    path: PathBuf,
    env: EnvName,
}

impl Root {
    /// ROOT, seen from `production`.
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            env: EnvName::production(),
        }
    }

    /// The same ROOT, seen from `env`.
    pub(crate) fn with_env(&self, env: EnvName) -> Self {
        Self {
            path: self.path.clone(),
            env,
        }
    }

    pub(crate) fn env(&self) -> &EnvName {
        &self.env
    }

    /// Where this environment's own files live: ROOT for `production`, `ROOT/envs/<name>`
    /// for the others. A compose file's relative paths cannot leave it.
    pub(crate) fn dir(&self) -> PathBuf {
        if self.env.is_production() {
            self.path.clone()
        } else {
            self.envs().join(self.env.as_str())
        }
    }

    /// The branch a preview was made for (its name is the branch made safe, which cannot
    /// be undone).
    pub(crate) fn preview_branch(&self) -> PathBuf {
        self.dir().join("branch")
    }

    /// The folders of the environments other than `production`.
    pub(crate) fn envs(&self) -> PathBuf {
        self.path.join("envs")
    }

    /// Finds ROOT from, in order: `--root`/`DEPLOY_ROOT` (already folded into `explicit` by
    /// clap), the bare repo a hook runs in (`GIT_DIR`), and the current directory or one of
    /// its parents.
    pub(crate) fn discover(explicit: Option<PathBuf>) -> anyhow::Result<Self> {
        if let Some(path) = explicit {
            let root = Self::new(absolute(&path)?);
            if !root.repo().is_dir() {
                bail!(
                    "`{}` is not a deploy root (no `code.git` in it); create one with `deploy init {}`",
                    root.path.display(),
                    root.path.display()
                );
            }
            return Ok(root);
        }
        let mut candidates = Vec::new();
        if let Some(git_dir) = std::env::var_os("GIT_DIR") {
            candidates.push(absolute(Path::new(&git_dir))?);
        }
        candidates.push(std::env::current_dir().context("failed to read the current directory")?);
        for start in candidates {
            for dir in start.ancestors() {
                if dir.file_name().is_some_and(|n| n == "code.git")
                    && let Some(parent) = dir.parent()
                {
                    return Ok(Self::new(parent.to_path_buf()));
                }
                if dir.join("code.git").is_dir() {
                    return Ok(Self::new(dir.to_path_buf()));
                }
            }
        }
        bail!("no deploy root found here; pass `--root ROOT` or set `DEPLOY_ROOT`")
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The bare repo that receives pushes.
    pub(crate) fn repo(&self) -> PathBuf {
        self.path.join("code.git")
    }

    /// The work tree of the deployed revision; compose-relative paths resolve here.
    pub(crate) fn code(&self) -> PathBuf {
        self.dir().join("code")
    }

    /// Operator-managed secret files. Untracked, kept across checkouts, never in a build.
    pub(crate) fn secrets(&self) -> PathBuf {
        self.code().join(".secrets")
    }

    pub(crate) fn build_logs(&self) -> PathBuf {
        self.dir().join("build-logs")
    }

    pub(crate) fn db_data(&self) -> PathBuf {
        self.dir().join("db-data")
    }

    /// Files written from `content:` configs, bind-mounted into containers.
    pub(crate) fn configs(&self) -> PathBuf {
        self.dir().join("configs")
    }

    /// Copies of secret and config files whose own directory a container can write to:
    /// mounted instead of the originals, which could be swapped after the check.
    pub(crate) fn mounts(&self) -> PathBuf {
        self.dir().join("mounts")
    }

    /// Everything under ROOT that holds `deploy`'s own state, which no container may reach:
    /// with it, a container could run code on the host (the repo's hooks), lift the policy
    /// (`deploy.yml`), rewrite history (the ledger), stop every deploy (the lock), or read
    /// what another environment keeps.
    pub(crate) fn own_state(&self) -> Vec<PathBuf> {
        let mut own = vec![
            self.repo(),
            self.build_logs(),
            self.configs(),
            self.mounts(),
            self.settings_file(),
            self.lock_file(),
            self.socket(),
            self.path.join("serve.log"),
            self.envs(),
            self.backups(),
            self.acme(),
            self.dashboard_token(),
        ];
        for suffix in ["", "-wal", "-shm", "-journal"] {
            own.push(self.path.join(format!("deploy.db{suffix}")));
        }
        // An environment's own folder is under `envs`, but its work tree and data are its
        // stack's: `envs` as a whole stays out of reach of `production` only.
        if !self.env.is_production() {
            own.retain(|p| *p != self.envs());
            for suffix in ["", "-wal", "-shm", "-journal"] {
                own.push(self.dir().join(format!("deploy.db{suffix}")));
            }
            own.push(self.notify_lock());
            own.push(self.preview_branch());
        }
        own
    }

    /// Database dumps, named like build logs: `<date> <time> <sha> <service>.dump`.
    pub(crate) fn backups(&self) -> PathBuf {
        self.dir().join("backups")
    }

    pub(crate) fn settings_file(&self) -> PathBuf {
        self.path.join("deploy.yml")
    }

    pub(crate) fn ledger_file(&self) -> PathBuf {
        self.dir().join("deploy.db")
    }

    pub(crate) fn lock_file(&self) -> PathBuf {
        self.path.join("deploy.lock")
    }
    /// The dashboard's access token (mode 0600).
    pub(crate) fn dashboard_token(&self) -> PathBuf {
        self.path.join("dashboard.token")
    }
    /// Held by the one process delivering notifications.
    pub(crate) fn notify_lock(&self) -> PathBuf {
        self.dir().join("notify.lock")
    }
    pub(crate) fn socket(&self) -> PathBuf {
        self.path.join("deploy.sock")
    }

    /// ACME's account key and certificates (`serve/acme.rs`), mode 0700.
    pub(crate) fn acme(&self) -> PathBuf {
        self.path.join("acme")
    }

    /// The certificates ACME obtained, one PEM file per hostname (mode 0600).
    pub(crate) fn acme_certs(&self) -> PathBuf {
        self.acme().join("certs")
    }

    pub(crate) fn hook(&self) -> PathBuf {
        self.repo().join("hooks").join("post-receive")
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("failed to resolve `{}`", path.display()))
}
