//! Test harness: a real deploy root, a real work repo pushing to it through the installed
//! hook, the real Docker engine, and cleanup of everything a test made.

#![allow(dead_code, reason = "each test binary uses part of the harness")]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bollard::Docker;

pub mod ca;
pub mod daemon;

pub const DEPLOY: &str = env!("CARGO_BIN_EXE_deploy");
pub const PASSWORD: &str = "s3cret-Pa55word-for-tests";

/// The Docker engine, or a loud failure: these tests never skip.
pub async fn docker() -> Docker {
    let docker = Docker::connect_with_local_defaults()
        .expect("Docker engine socket not usable: these tests need a running Docker engine");
    let docker = docker.negotiate_version().await.expect(
        "no Docker engine answers at the local socket: start Docker; these tests never skip",
    );
    docker
        .ping()
        .await
        .expect("the Docker engine does not answer a ping");
    docker
}

/// A unique, valid project name per test and run, so parallel tests never share containers,
/// networks, volumes or images.
pub fn unique_project(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t{prefix}{}x{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        nanos % 100_000
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A deploy root plus a developer's clone that pushes to it.
pub struct Stack {
    pub project: String,
    pub base: tempfile::TempDir,
    pub root: PathBuf,
    pub work: PathBuf,
    pub port: u16,
}

impl Stack {
    /// `deploy init`, a secret file, host settings giving the app a free port, and a work
    /// repo holding the fixture app (the BPT example's app with a port from the host env).
    pub fn new(prefix: &str) -> Self {
        let stack = Self::empty(prefix);
        let (root, work) = (&stack.root, &stack.work);
        std::fs::write(
            root.join("code/.secrets/db_password"),
            format!("{PASSWORD}\n"),
        )
        .unwrap();
        std::fs::write(root.join("host.env"), format!("WEB_PORT={}\n", stack.port)).unwrap();
        stack.add_settings("env_file: host.env\nhealth_timeout: 90s\nmin_free_space: 1GiB\n");
        copy_dir(&fixture("app"), work);
        for f in ["app.py", "Dockerfile", ".dockerignore"] {
            std::fs::copy(example("bpt").join(f), work.join(f)).unwrap();
        }
        stack
    }

    /// `deploy init` and an empty work repo whose `prod` remote is the root: for tests that
    /// bring their own files and settings.
    pub fn empty(prefix: &str) -> Self {
        let project = unique_project(prefix);
        let base = tempfile::Builder::new()
            .prefix("deploy-test-")
            .tempdir()
            .unwrap();
        let root = base.path().join(&project);
        let work = base.path().join("work");
        let port = free_port();

        // Registered in the test's own folder, not the host's.
        let serve_yml = base.path().join("serve.yml");
        std::fs::write(
            &serve_yml,
            format!("roots_dir: {}\n", base.path().join("roots").display()),
        )
        .unwrap();
        let init = run(Command::new(DEPLOY)
            .arg("init")
            .arg(&root)
            .env("DEPLOY_SERVE_CONFIG", &serve_yml));
        assert!(
            init.status.success(),
            "deploy init failed:\n{}",
            text(&init)
        );
        assert!(
            text(&init).contains("git remote add prod"),
            "{}",
            text(&init)
        );

        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["config", "user.email", "dev@example.com"]);
        git(&work, &["config", "user.name", "Dev"]);
        git(
            &work,
            &[
                "remote",
                "add",
                "prod",
                root.join("code.git").to_str().unwrap(),
            ],
        );
        Self {
            project,
            base,
            root,
            work,
            port,
        }
    }

    /// Appends host settings to `ROOT/deploy.yml`.
    pub fn add_settings(&self, yaml: &str) {
        let path = self.root.join("deploy.yml");
        let settings = std::fs::read_to_string(&path).unwrap();
        std::fs::write(path, format!("{settings}{yaml}")).unwrap();
    }

    pub fn write(&self, path: &str, contents: &str) {
        let p = self.work.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
    }

    /// Commits everything in the work repo and returns the new commit's full sha.
    pub fn commit(&self, message: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(
            &self.work,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        self.head()
    }

    pub fn head(&self) -> String {
        String::from_utf8(git(&self.work, &["rev-parse", "HEAD"]).stdout)
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Sets VERSION, commits and pushes as `user`.
    pub fn push_version(&self, version: &str, user: &str) -> (String, Push) {
        self.write("VERSION", &format!("{version}\n"));
        let sha = self.commit(&format!("release {version}"));
        (sha, self.push(user))
    }

    /// A real `git push prod main`; the hook's output comes back as `remote:` lines.
    pub fn push(&self, user: &str) -> Push {
        let out = run(Command::new("git")
            .current_dir(&self.work)
            .args(["push", "-q", "prod", "main"])
            .env("DEPLOY_USER", user));
        Push {
            output: text(&out),
            pushed: out.status.success(),
        }
    }

    /// Runs `deploy ARGS --root ROOT`.
    pub fn deploy(&self, args: &[&str]) -> Output {
        run(Command::new(DEPLOY)
            .args(args)
            .arg("--root")
            .arg(&self.root))
    }

    pub fn get(&self, path: &str) -> Option<String> {
        http_get(self.port, path)
    }

    /// Waits until the page contains `want`, or fails with what it last saw.
    pub fn wait_for_page(&self, want: &str, within: Duration) -> String {
        let start = Instant::now();
        let mut last = None;
        while start.elapsed() < within {
            last = self.get("/");
            if last.as_deref().is_some_and(|b| b.contains(want)) {
                return last.unwrap();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "the page never showed `{want}` on port {}; last answer: {last:?}",
            self.port
        );
    }

    pub fn logs(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.root.join("build-logs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".log"))
            .collect();
        names.sort();
        names
    }

    pub fn history(&self) -> Vec<serde_json::Value> {
        let out = self.deploy(&["history", "--json"]);
        assert!(out.status.success(), "history failed: {}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        cleanup(&self.project);
        // Postgres owns files in db-data; we are root, so plain removal works.
        let _ = std::fs::remove_dir_all(self.base.path());
    }
}

pub struct Push {
    pub output: String,
    pub pushed: bool,
}

/// Removes every container, network, volume and image labelled with `project`.
pub fn cleanup(project: &str) {
    cleanup_labelled("deploy.project", project);
}

/// Removes every container, network, volume and image whose label `key` is `project`.
pub fn cleanup_labelled(key: &str, project: &str) {
    let label = format!("{key}={project}");
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let docker = docker().await;
            let filters = HashMap::from([("label".to_owned(), vec![label])]);
            let containers = docker
                .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                    all: true,
                    filters: Some(filters.clone()),
                    ..Default::default()
                }))
                .await
                .unwrap_or_default();
            for c in containers {
                let _ = docker
                    .remove_container(
                        c.id.as_deref().unwrap_or_default(),
                        Some(bollard::query_parameters::RemoveContainerOptions {
                            force: true,
                            v: true,
                            link: false,
                        }),
                    )
                    .await;
            }
            let networks = docker
                .list_networks(Some(bollard::query_parameters::ListNetworksOptions {
                    filters: Some(filters.clone()),
                }))
                .await
                .unwrap_or_default();
            for n in networks {
                let _ = docker
                    .remove_network(n.id.as_deref().unwrap_or_default())
                    .await;
            }
            let volumes = docker
                .list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
                    filters: Some(filters.clone()),
                }))
                .await
                .ok()
                .and_then(|v| v.volumes)
                .unwrap_or_default();
            for v in volumes {
                let _ = docker
                    .remove_volume(
                        &v.name,
                        None::<bollard::query_parameters::RemoveVolumeOptions>,
                    )
                    .await;
            }
            let images = docker
                .list_images(Some(bollard::query_parameters::ListImagesOptions {
                    all: false,
                    filters: Some(filters),
                    ..Default::default()
                }))
                .await
                .unwrap_or_default();
            for i in images {
                force_remove_image(&docker, &i.id).await;
            }
        });
    });
    let _ = handle.join();
}

/// Removes an image but not its untagged parents: those are the build cache the tests share
/// (the same Dockerfile steps), and pruning them under another test's build failed it with
/// "unknown parent image ID".
async fn force_remove_image(docker: &Docker, id: &str) {
    let options = bollard::query_parameters::RemoveImageOptions {
        force: true,
        noprune: true,
        ..Default::default()
    };
    let _ = docker.remove_image(id, Some(options), None).await;
}

/// Removes every image with a tag whose repository starts with `prefix` (a unique project
/// name): the images docker-compose builds carry no label to find them by.
pub fn remove_images_named(prefix: &str) {
    let prefix = prefix.to_owned();
    block(async move {
        let docker = docker().await;
        let images = docker
            .list_images(None::<bollard::query_parameters::ListImagesOptions>)
            .await
            .unwrap_or_default();
        for i in images {
            if i.repo_tags.iter().any(|t| t.starts_with(&prefix)) {
                force_remove_image(&docker, &i.id).await;
            }
        }
    });
}

pub fn http_get(port: u16, path: &str) -> Option<String> {
    let response = http_answer(port, path)?;
    let ok = response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200");
    ok.then_some(response)
}

/// Whatever answers `GET path` on the port, whatever its status.
pub fn http_answer(port: u16, path: &str) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy-examples")
        .join(name)
}

pub fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

pub fn git(dir: &Path, args: &[&str]) -> Output {
    let out = run(Command::new("git").current_dir(dir).args(args));
    assert!(out.status.success(), "git {args:?} failed: {}", text(&out));
    out
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .expect("failed to run a command")
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a future to completion from a synchronous test.
pub fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Runs `cmd` in a running container: its exit code and its output.
pub fn exec(id: &str, cmd: &[&str]) -> (i64, String) {
    let id = id.to_owned();
    let cmd: Vec<String> = cmd.iter().map(|s| (*s).to_owned()).collect();
    block(async move {
        let docker = docker().await;
        let options = bollard::exec::CreateExecOptions {
            cmd: Some(cmd),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = docker.create_exec(&id, options).await.unwrap();
        let mut output = String::new();
        if let bollard::exec::StartExecResults::Attached {
            output: mut stream, ..
        } = docker.start_exec(&exec.id, None).await.unwrap()
        {
            while let Some(Ok(chunk)) = futures_util::StreamExt::next(&mut stream).await {
                output.push_str(&chunk.to_string());
            }
        }
        let code = docker
            .inspect_exec(&exec.id)
            .await
            .unwrap()
            .exit_code
            .unwrap_or(-1);
        (code, output)
    })
}

/// What `deploy --version` names after `deploy `: the version and the commit.
pub fn deploy_version() -> String {
    let out = run(Command::new(DEPLOY).arg("--version"));
    let printed = String::from_utf8_lossy(&out.stdout);
    let version = printed.trim().strip_prefix("deploy ").unwrap_or_default();
    assert!(
        version.contains(" (") && !version.contains("unknown commit"),
        "deploy --version names the version and the commit it was built from: {printed}"
    );
    version.to_owned()
}

/// The id of an image, or None if there is no such tag.
pub fn image_id(tag: &str) -> Option<String> {
    block(async {
        let docker = docker().await;
        docker.inspect_image(tag).await.ok().and_then(|i| i.id)
    })
}

/// Containers of the project, by service: (name, id).
pub fn containers(project: &str) -> Vec<bollard::models::ContainerSummary> {
    block(async {
        let docker = docker().await;
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("deploy.project={project}")],
        )]);
        docker
            .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .unwrap()
    })
}

pub fn service_container(project: &str, service: &str) -> bollard::models::ContainerSummary {
    let all = containers(project);
    let mine: Vec<_> = all
        .into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get("deploy.service"))
                .map(String::as_str)
                == Some(service)
        })
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "expected one `{service}` container, found {mine:?}"
    );
    mine.into_iter().next().unwrap()
}

impl Stack {
    /// A one-service stack: Python's own web server showing `version: VERSION`. No database, so
    /// each test's first deploy is quick.
    pub fn web(prefix: &str) -> Self {
        let stack = Stack::empty(prefix);
        std::fs::write(
            stack.root.join("host.env"),
            format!("WEB_PORT={}\n", stack.port),
        )
        .unwrap();
        stack.add_settings("env_file: host.env\nhealth_timeout: 90s\nmin_free_space: 1GiB\n");
        stack.write(
            "docker-compose.yml",
            "services:\n  web:\n    build: .\n    ports: [\"${WEB_PORT}:8000\"]\n    stop_grace_period: 1s\n",
        );
        stack.write("Dockerfile", &web_dockerfile(""));
        stack
    }

    /// The work repo's compose file.
    pub fn compose(&self) -> String {
        std::fs::read_to_string(self.work.join("docker-compose.yml")).unwrap()
    }

    /// Sets top-level keys of `ROOT/deploy.yml` (each line `key: value`), replacing the
    /// lines of keys already there.
    pub fn add_setting(&self, lines: &str) {
        let path = self.root.join("deploy.yml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        for line in lines.lines() {
            let key = line.split(':').next().unwrap();
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with(&format!("{key}:")))
                .collect();
            text = kept.join("\n") + "\n" + line + "\n";
        }
        std::fs::write(path, text).unwrap();
    }

    /// Ids of the project's containers, sorted.
    pub fn container_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = containers(&self.project)
            .into_iter()
            .filter_map(|c| c.id)
            .collect();
        ids.sort();
        ids
    }

    /// The visit count the page shows now (each call adds one row).
    pub fn visits(&self, version: &str) -> u64 {
        visits(&self.wait_for_page(&format!("version: {version}"), Duration::from_secs(30)))
    }
}

/// The visit count on a page of the fixture app.
pub fn visits(page: &str) -> u64 {
    let at = page
        .find("visits: ")
        .unwrap_or_else(|| panic!("no visit count in {page}"));
    page[at + 8..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// The app's Dockerfile, with `extra` lines before its command.
pub fn web_dockerfile(extra: &str) -> String {
    format!(
        "FROM python:3.11-slim\nWORKDIR /srv\nCOPY index.html /srv/\n{extra}CMD [\"python\", \"-m\", \"http.server\", \"8000\"]\n"
    )
}

/// curl with a 10 s bound; its output, or what it said when it failed.
pub fn curl(args: &[&str]) -> Result<String, String> {
    let out = run(Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args));
    match out.status.success() {
        true => Ok(String::from_utf8(out.stdout).unwrap()),
        false => Err(text(&out)),
    }
}

impl Stack {
    /// A real `git push prod REFSPEC` as `user`: another branch (`HEAD:refs/heads/staging`),
    /// or a branch's deletion (`:feature/login`).
    pub fn push_ref(&self, refspec: &str, user: &str) -> Push {
        let out = run(Command::new("git")
            .current_dir(&self.work)
            .args(["push", "-q", "prod", refspec])
            .env("DEPLOY_USER", user));
        Push {
            output: text(&out),
            pushed: out.status.success(),
        }
    }
}

/// Waits until the page on `port` contains `want`, or fails with what it last saw.
pub fn wait_for_page_at(port: u16, want: &str, within: Duration) -> String {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < within {
        last = http_get(port, "/");
        if last.as_deref().is_some_and(|b| b.contains(want)) {
            return last.unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the page never showed `{want}` on port {port}; last answer: {last:?}");
}

/// Removes what a project made when dropped: for the projects a test makes besides its
/// stack's own (`<project>-staging`, a preview's `<project>-feature-x`).
pub struct Cleanup(pub String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        cleanup(&self.0);
    }
}

/// How many Docker objects carry `deploy.project=<project>`, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Labelled {
    pub containers: usize,
    pub networks: usize,
    pub volumes: usize,
    pub images: usize,
}

impl Labelled {
    pub fn total(&self) -> usize {
        self.containers + self.networks + self.volumes + self.images
    }
}

/// Counts the containers (running or not), networks, volumes and images labelled
/// `deploy.project=<project>`.
pub fn labelled(project: &str) -> Labelled {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("deploy.project={project}")],
    )]);
    block(async move {
        let docker = docker().await;
        let containers = docker
            .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                all: true,
                filters: Some(filters.clone()),
                ..Default::default()
            }))
            .await
            .unwrap()
            .len();
        let networks = docker
            .list_networks(Some(bollard::query_parameters::ListNetworksOptions {
                filters: Some(filters.clone()),
            }))
            .await
            .unwrap()
            .len();
        let volumes = docker
            .list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
                filters: Some(filters.clone()),
            }))
            .await
            .unwrap()
            .volumes
            .unwrap_or_default()
            .len();
        let images = docker
            .list_images(Some(bollard::query_parameters::ListImagesOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .unwrap()
            .len();
        Labelled {
            containers,
            networks,
            volumes,
            images,
        }
    })
}

/// A build log's name is `<YYYY-MM-DD> <HH:MM:SS> <sha> <user>.log`.
pub fn assert_log_name(name: &str, sha: &str, user: &str) {
    let parts: Vec<&str> = name.trim_end_matches(".log").split(' ').collect();
    assert_eq!(parts.len(), 4, "{name}");
    assert!(
        chrono::NaiveDate::parse_from_str(parts[0], "%Y-%m-%d").is_ok(),
        "{name}"
    );
    assert!(
        chrono::NaiveTime::parse_from_str(parts[1], "%H:%M:%S").is_ok(),
        "{name}"
    );
    assert_eq!((parts[2], parts[3]), (sha, user), "{name}");
}
