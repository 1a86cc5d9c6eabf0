//! `deploy init ROOT`: create the host layout and install the hook. Safe to run again.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::git;
use crate::ledger::Ledger;
use crate::pipeline::blocking;
use crate::root::Root;

/// The hook template shipped in `hooks/post-receive`.
const HOOK_TEMPLATE: &str = include_str!("../../hooks/post-receive");
const HOOK_MARKER: &str = "@DEPLOY_HOOK_MARKER@";
/// Replaces the marker, so a later init recognises its own hook.
const MANAGED: &str = "managed by `deploy init`; rerun it to update";

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to create the deploy root (e.g. /srv/myapp).
    root: PathBuf,
    /// The branch whose pushes deploy.
    #[arg(long, default_value = "main")]
    branch: String,
    /// Also install and start `deploy serve` for this root as a systemd service, where
    /// systemd runs (zero-downtime deploys from the first push); elsewhere, say what to run.
    #[arg(long)]
    serve: bool,
}

/// The unit the Debian package ships, for hosts where `deploy` was installed without it.
const SERVE_UNIT: &str = include_str!("../../systemd/deploy-serve@.service");
/// The host's one daemon, for every registered root.
const HOST_UNIT: &str = include_str!("../../systemd/deploy-serve.service");

pub(crate) async fn run(args: Args) -> anyhow::Result<u8> {
    let path = std::path::absolute(&args.root)
        .with_context(|| format!("failed to resolve `{}`", args.root.display()))?;
    let root = Root::new(path);
    prepare(&root, &args.branch).await?;
    // `deploy serve` without `--root` serves the registered roots; a host where this user
    // cannot register still works with `--root`.
    let registered = crate::serve::config::ServeConfig::load()
        .and_then(|config| crate::serve::registry::register(&config.roots, &root));
    if let Err(e) = &registered {
        eprintln!(
            "deploy: warning: {e:#}; `deploy serve` will need `--root {}`",
            root.path().display()
        );
    }
    let repo = root.repo();
    println!("deploy root ready at {}", root.path().display());
    println!(
        "put secret files in {}/ (e.g. db_password), then push:",
        root.secrets().display()
    );
    println!();
    println!("  git remote add prod {}", remote_url(&repo));
    println!("  git push prod {}", args.branch);
    if args.serve {
        println!();
        match registered {
            Ok(()) => serve_host()?,
            Err(_) => serve(&root)?,
        }
    }
    Ok(super::exit::SUCCESS)
}

/// `--serve` for a registered root: the host's one daemon, `deploy-serve.service`, enabled
/// and started, or reloaded when it runs (its new process serves this root too); where
/// systemd does not run, what to run instead.
fn serve_host() -> anyhow::Result<()> {
    if !systemd_runs(
        "for every registered root (if it runs already, `deploy serve --upgrade` makes it serve this root too)",
        "deploy serve",
    ) {
        return Ok(());
    }
    install_unit("deploy-serve.service", HOST_UNIT)?;
    let service = "deploy-serve.service";
    command("systemctl", &["daemon-reload"])?;
    let active = std::process::Command::new("systemctl")
        .args(["is-active", "--quiet", service])
        .status()
        .is_ok_and(|status| status.success());
    if active {
        command("systemctl", &["reload", service])?;
    } else {
        command("systemctl", &["enable", "--now", service])?;
    }
    println!("deploy serve runs as {service} for every registered root (journalctl -u {service})");
    Ok(())
}

/// Whether systemd runs here; if not, says what to run (`by_hand`, the daemon `what` is
/// for) under the operator's own supervisor.
fn systemd_runs(what: &str, by_hand: &str) -> bool {
    if Path::new("/run/systemd/system").is_dir() {
        return true;
    }
    let what = if what.is_empty() {
        String::new()
    } else {
        format!(" {what}")
    };
    println!(
        "systemd does not run here, so nothing was installed; run the daemon{what} under your supervisor:"
    );
    println!();
    println!("  {by_hand}");
    false
}

/// Writes `name` to /etc/systemd/system for this binary, unless a package shipped it.
fn install_unit(name: &str, text: &str) -> anyhow::Result<()> {
    let shipped = [
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
        "/etc/systemd/system",
    ]
    .iter()
    .any(|dir| Path::new(dir).join(name).exists());
    if !shipped {
        let exe =
            std::env::current_exe().context("failed to find the path of the deploy binary")?;
        let unit = text.replace("/usr/local/bin/deploy", &exe.to_string_lossy());
        let path = Path::new("/etc/systemd/system").join(name);
        std::fs::write(&path, unit)
            .with_context(|| format!("failed to write `{}`", path.display()))?;
    }
    Ok(())
}

/// `--serve` for a root that could not be registered: the daemon as a systemd service
/// `deploy-serve@<root>.service`, enabled and started; where systemd does not run, what to
/// run instead.
fn serve(root: &Root) -> anyhow::Result<()> {
    let by_hand = format!(
        "deploy serve --root {}",
        shlex::try_quote(&root.path().to_string_lossy()).unwrap_or_default()
    );
    if !systemd_runs("", &by_hand) {
        return Ok(());
    }
    install_unit("deploy-serve@.service", SERVE_UNIT)?;
    let escaped = command(
        "systemd-escape",
        &["--path", &root.path().to_string_lossy()],
    )?;
    let service = format!("deploy-serve@{}.service", escaped.trim());
    command("systemctl", &["daemon-reload"])?;
    command("systemctl", &["enable", "--now", &service])?;
    println!("deploy serve runs as {service} (journalctl -u {service})");
    Ok(())
}

/// Runs a systemd tool; its output, or why it failed.
fn command(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("failed to run `{program}`"))?;
    if !out.status.success() {
        anyhow::bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Makes `root` a deploy root, keeping whatever it holds already: the layout, the bare repo,
/// `deploy.yml` (written only when missing), the hook (for this binary), the ledger.
pub(crate) async fn prepare(root: &Root, branch: &str) -> anyhow::Result<()> {
    for dir in [
        root.path().to_path_buf(),
        root.code(),
        root.build_logs(),
        root.db_data(),
    ] {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("failed to create `{}`", dir.display()))?;
    }
    std::fs::create_dir_all(root.secrets())
        .with_context(|| format!("failed to create `{}`", root.secrets().display()))?;
    std::fs::set_permissions(root.secrets(), std::fs::Permissions::from_mode(0o700)).with_context(
        || {
            format!(
                "failed to restrict `{}` to its owner",
                root.secrets().display()
            )
        },
    )?;

    let (repo, branch_name) = (root.repo(), branch.to_owned());
    blocking(move || git::init_bare(&repo, &branch_name)).await??;
    write_settings(root, branch)?;
    install_hook(root)?;
    Ledger::open(&root.ledger_file()).await?;
    crate::serve::dashboard::make_token(root)?;
    write_build_logs_readme(root)
}

/// Writes `deploy.yml` on first init only: an operator's edits are never overwritten.
fn write_settings(root: &Root, branch: &str) -> anyhow::Result<()> {
    let path = root.settings_file();
    if path.exists() {
        let current = crate::settings::Settings::load(root)?;
        if current.branch != branch {
            eprintln!(
                "deploy: keeping `{}`: it deploys branch `{}` (edit it to change)",
                path.display(),
                current.branch
            );
        }
        return Ok(());
    }
    let text = format!(
        "# Host settings for deploy; see the README for every key.\nbranch: {branch}\n# retention: 5\n# health_timeout: 60s\n# min_free_space: 2GiB\n"
    );
    std::fs::write(&path, text).with_context(|| format!("failed to write `{}`", path.display()))
}

/// Installs the post-receive hook pointing at this binary. A hook someone else wrote is
/// kept beside it rather than lost.
fn install_hook(root: &Root) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("failed to find the path of the deploy binary")?;
    let hook = HOOK_TEMPLATE
        .replace("@DEPLOY_BIN@", &shell_quote(&exe))
        .replace("@DEPLOY_ROOT@", &shell_quote(root.path()));
    let path = root.hook();
    if let Ok(existing) = std::fs::read_to_string(&path)
        && !existing.contains(MANAGED)
    {
        let aside = path.with_extension("before-deploy");
        std::fs::rename(&path, &aside)
            .with_context(|| format!("failed to move `{}` aside", path.display()))?;
        eprintln!(
            "deploy: an existing post-receive hook was moved to `{}`",
            aside.display()
        );
    }
    let hook = hook.replace(HOOK_MARKER, MANAGED);
    std::fs::write(&path, hook).with_context(|| format!("failed to write `{}`", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("failed to make `{}` executable", path.display()))?;
    Ok(())
}

fn write_build_logs_readme(root: &Root) -> anyhow::Result<()> {
    let path = root.build_logs().join("README");
    if !path.exists() {
        std::fs::write(
            &path,
            "One log per deploy, named \"<YYYY-MM-DD> <HH:MM:SS> <full sha> <user>.log\".\n`latest` points at the newest. Follow a deploy with: tail -f latest\n",
        )
        .with_context(|| format!("failed to write `{}`", path.display()))?;
    }
    Ok(())
}

/// Single-quotes a path for /bin/sh, so spaces or quotes in it are never interpreted.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}

/// `ssh://user@host/ROOT/code.git` when run as a user with a host name; the plain path
/// works for pushes from this machine.
fn remote_url(repo: &Path) -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok());
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name);
    match (user, host) {
        (Some(user), Some(host)) => format!("ssh://{user}@{host}{}", repo.display()),
        _ => repo.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote(Path::new("/srv/my app")), "'/srv/my app'");
        assert_eq!(shell_quote(Path::new("/srv/it's")), r"'/srv/it'\''s'");
    }
}
