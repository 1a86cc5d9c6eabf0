//! Issue #18: the Debian package, installed on a clean Debian host as the README's "Install
//! on a server" says, word for word: the commands are read from the README (the block after
//! `<!-- install-command -->`), as `.ci/run` reads the test command. Then `deploy --version`,
//! `man -w deploy` and the bash completion run there, a deploy root is made, the package is
//! purged, and the host's files before and after show that nothing but the package's own
//! files went (the `deploy` group and the root stay).
//!
//! The host is a container of `debian-host:bookworm` (`scripts/offline-images`), without a
//! network. A Docker engine cannot run inside it, so a stand-in package that provides
//! `docker.io` satisfies that one dependency (as `--force-depends` would for it alone); apt
//! resolves every other dependency itself. The package is `target/debian/*.deb`, built by
//! `scripts/package` before the tests (the README's test command runs it).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;

const HOST_IMAGE: &str = "debian-host:bookworm";

/// Where the package and the README's commands run.
const WORKDIR: &str = "/root/install";

/// What dpkg, apt and man-db keep about installed packages: it changes with any install.
const PACKAGE_STATE: &[&str] = &[
    "/var/lib/dpkg/",
    "/var/lib/apt/",
    "/var/cache/apt/",
    "/var/cache/man/",
    "/var/cache/debconf/",
    "/var/log/",
];

#[test]
fn the_package_installs_as_the_readme_says_and_leaves_only_its_group_behind() {
    let deb = built_package();
    let install = readme_block("<!-- install-command -->");
    assert!(
        install.contains("apt install ./deploy_"),
        "the README's install command installs the package: {install}"
    );
    let host = Host::start(&deb);
    host.ok(STAND_IN_FOR_DOCKER);

    let before = host.files();
    let out = host.ok(&format!("cd {WORKDIR}\n{install}"));
    let version = deploy_version();
    assert!(
        out.contains(&format!("deploy {version}\n")),
        "`deploy --version` on the host prints this tree's version and commit ({version}); \
         a package from another commit needs `scripts/package` again: {out}"
    );

    assert_eq!(
        host.ok("man -w deploy").trim(),
        "/usr/share/man/man1/deploy.1.gz"
    );
    assert_eq!(
        host.ok("man -w deploy-status").trim(),
        "/usr/share/man/man1/deploy-status.1.gz"
    );
    let page = host.ok("MANPAGER=cat MANWIDTH=80 man deploy 2>&1");
    assert!(
        page.contains("git push deploys"),
        "man deploy shows the page: {page}"
    );
    let completed = host.ok(BASH_COMPLETES_STA);
    assert_eq!(
        completed.trim(),
        "status",
        "bash completes `deploy sta` through the installed completion script"
    );
    for file in [
        "/usr/share/zsh/vendor-completions/_deploy",
        "/usr/share/fish/vendor_completions.d/deploy.fish",
        "/usr/share/doc/deploy/README.md",
        "/usr/lib/systemd/system/deploy-serve@.socket",
        "/usr/lib/systemd/system/deploy-serve.service",
    ] {
        host.ok(&format!("test -s {file}"));
    }
    host.ok("grep -q '^ExecStart=/usr/bin/deploy serve --root %f$' /usr/lib/systemd/system/deploy-serve@.service");
    assert!(
        host.ok("getent group deploy").starts_with("deploy:"),
        "installing creates the group `deploy`"
    );

    // A deploy root, made by the installed binary, as an operator's first step.
    host.ok("deploy init /srv/app");
    let hook = host.ok("cat /srv/app/code.git/hooks/post-receive");
    assert!(
        hook.contains("/usr/bin/deploy"),
        "the hook runs the installed binary: {hook}"
    );
    let package_files: Vec<String> = host
        .ok("dpkg -L deploy")
        .lines()
        .map(str::to_owned)
        .collect();
    let installed = host.files();

    host.ok("apt-get purge -y deploy");
    let after = host.files();
    assert!(
        host.ok("command -v deploy || echo gone").trim() == "gone",
        "purging removes the binary"
    );

    let removed_or_changed = differences(&installed, &after);
    let touched: Vec<_> = removed_or_changed
        .iter()
        .filter(|path| !package_files.contains(path) && !is_package_state(path))
        .collect();
    assert!(
        touched.is_empty(),
        "purging the package touches only its own files and dpkg's records, not: {touched:#?}"
    );
    let root_before: Vec<_> = installed
        .keys()
        .filter(|p| p.starts_with("/srv/app"))
        .collect();
    let root_after: Vec<_> = after.keys().filter(|p| p.starts_with("/srv/app")).collect();
    assert!(
        root_before.len() > 5,
        "the deploy root was made: {root_before:?}"
    );
    assert_eq!(root_before, root_after, "the deploy root is left whole");

    // The root and its registration (`deploy serve` without `--root` serves it) are the
    // operator's, like the data in it.
    let registration = [
        "/etc/deploy",
        "/etc/deploy/roots",
        "/etc/deploy/roots/srv_app",
    ];
    let left: Vec<_> = differences(&before, &after)
        .into_iter()
        .filter(|path| {
            !is_package_state(path)
                && !path.starts_with("/srv")
                && !registration.contains(&path.as_str())
        })
        .collect();
    assert_eq!(
        left,
        ["/etc/group", "/etc/group-", "/etc/gshadow", "/etc/gshadow-"],
        "installing and purging leaves only the group `deploy` (and the root) behind"
    );
    assert_eq!(
        host.ok("readlink /etc/deploy/roots/srv_app").trim(),
        "/srv/app",
        "deploy init registered its root"
    );
    assert!(host.ok("getent group deploy").starts_with("deploy:"));
}

/// Before anything else on the host: a package that provides `docker.io`, the one
/// dependency that cannot be met in a container.
const STAND_IN_FOR_DOCKER: &str = r#"
mkdir -p /tmp/standin/DEBIAN
cat > /tmp/standin/DEBIAN/control <<EOF
Package: docker-engine-standin
Version: 1
Architecture: all
Maintainer: deploy tests
Provides: docker.io
Description: stands in for the Docker engine, which cannot run in this container
EOF
dpkg-deb --build /tmp/standin /tmp/standin.deb >/dev/null
dpkg -i /tmp/standin.deb >/dev/null
rm -rf /tmp/standin /tmp/standin.deb
"#;

/// Bash's own completion loader finds the script and completes `deploy sta`.
const BASH_COMPLETES_STA: &str = r#"
set +eu
source /usr/share/bash-completion/bash_completion
_completion_loader deploy # 124: "loaded, complete again"
function=$(complete -p deploy | sed -E 's/.* -F ([^ ]+) .*/\1/')
COMP_WORDS=(deploy sta); COMP_CWORD=1; COMP_LINE='deploy sta'; COMP_POINT=10
"$function" deploy sta deploy
printf '%s\n' "${COMPREPLY[@]}"
"#;

/// The package `scripts/package` built, or a loud failure.
fn built_package() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/debian");
    let mut debs: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "deb"))
                .collect()
        })
        .unwrap_or_default();
    debs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    debs.pop().unwrap_or_else(|| {
        panic!(
            "no Debian package in {}: run `scripts/package` first (the README's test command does)",
            dir.display()
        )
    })
}

/// The lines of the fenced block after `marker` in the README.
fn readme_block(marker: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let after = readme
        .split_once(marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"))
        .1;
    let mut fences = after.splitn(3, "```");
    fences.next();
    let block = fences.next().expect("a fenced block follows the marker");
    block
        .split_once('\n')
        .expect("the fence names a language")
        .1
        .to_owned()
}

/// Files under `/` on the host: path → what would show a change (type, mode and owner; and
/// for all but directories, whose size and time move whenever an entry comes or goes, the
/// size, link target and modification time).
type Files = BTreeMap<String, String>;

/// Paths present in `a` and absent or different in `b`, or new in `b`.
fn differences(a: &Files, b: &Files) -> Vec<String> {
    let mut paths: Vec<String> = a
        .iter()
        .filter(|(path, what)| b.get(*path) != Some(what))
        .map(|(path, _)| path.clone())
        .collect();
    paths.extend(b.keys().filter(|p| !a.contains_key(*p)).cloned());
    paths.sort();
    paths
}

fn is_package_state(path: &str) -> bool {
    PACKAGE_STATE.iter().any(|dir| path.starts_with(dir))
}

/// A clean Debian host: a container of [`HOST_IMAGE`] holding the package in [`WORKDIR`],
/// removed with everything labelled with its project when dropped.
struct Host {
    project: String,
    id: String,
    _dir: tempfile::TempDir,
}

impl Host {
    fn start(deb: &std::path::Path) -> Self {
        let project = unique_project("package");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(deb, dir.path().join(deb.file_name().unwrap())).unwrap();
        let binds = vec![format!("{}:{WORKDIR}:ro", dir.path().display())];
        let labels =
            std::collections::HashMap::from([("deploy.project".to_owned(), project.clone())]);
        let id = block(async {
            let docker = docker().await;
            docker.inspect_image(HOST_IMAGE).await.unwrap_or_else(|e| {
                panic!("no image {HOST_IMAGE} ({e}): run `scripts/offline-images` first")
            });
            let body = bollard::models::ContainerCreateBody {
                image: Some(HOST_IMAGE.to_owned()),
                cmd: Some(vec!["sleep".to_owned(), "infinity".to_owned()]),
                labels: Some(labels),
                network_disabled: Some(true),
                host_config: Some(bollard::models::HostConfig {
                    binds: Some(binds),
                    init: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let options = bollard::query_parameters::CreateContainerOptions {
                name: Some(project.clone()),
                ..Default::default()
            };
            let id = docker
                .create_container(Some(options), body)
                .await
                .unwrap()
                .id;
            docker
                .start_container(
                    &id,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
                .unwrap();
            id
        });
        Host {
            project,
            id,
            _dir: dir,
        }
    }

    /// Runs `script` with bash (`-e`, `-u`, `pipefail`) as root; its output, or a failure
    /// that shows it.
    fn ok(&self, script: &str) -> String {
        let wrapped = format!("set -euo pipefail\nexport DEBIAN_FRONTEND=noninteractive\n{script}");
        let (code, out) = exec(&self.id, &["bash", "-c", &wrapped]);
        assert_eq!(
            code, 0,
            "on the host:\n{script}\nfailed with {code}:\n{out}"
        );
        out
    }

    fn files(&self) -> Files {
        let listing = self.ok(
            r"find / -xdev \( -path /proc -o -path /sys -o -path /dev \) -prune -o \
              -printf '%p\t%y %m %U:%G %s %l %T@\n'",
        );
        listing
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(path, what)| {
                let what: Vec<&str> = what.split(' ').collect();
                let kept = if what[0] == "d" { 3 } else { what.len() };
                (path.to_owned(), what[..kept].join(" "))
            })
            .collect()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        cleanup(&self.project);
    }
}
