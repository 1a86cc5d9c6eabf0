//! Issue #17: whoever can push must not reach the host, another project or deploy's own
//! files. Each test replays one finding of the security trial as an attacker with push access
//! would: real pushes to a real deploy root, the real engine, links that really point at
//! `/etc/shadow`, the Docker socket or another ROOT's secret. Each first checks that the harm
//! did not happen (the container could not read the file, the file is unchanged, nothing
//! mounts the host's `/`), then that the push was refused with one
//! `<key path>: refused: <reason>` line per refusal.
//!
//! Findings 15–17 (the daemon's socket) are not here: they need `deploy serve`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bollard::models::ContainerInspectResponse;
use common::*;
use futures_util::StreamExt;
use sha2::Digest;

const DEBIAN: &str = "debian:bookworm-slim";
const PYTHON: &str = "python:3.11-slim";

/// Host settings of every stack here: a new container that cannot prove itself fails the
/// deploy soon, and this machine's free space is enough.
const SETTINGS: &str = "health_timeout: 30s\nmin_free_space: 1GiB\n";

/// How long a push may take before it counts as wedged and is killed with its hook. Long,
/// because the quadratic YAML parse of finding 12 takes over a minute in a debug build.
const PUSH_LIMIT: Duration = Duration::from_secs(300);

/// How long a push that has nothing slow to do may take before it counts as wedged.
const QUICK_PUSH_LIMIT: Duration = Duration::from_secs(30);

/// What a push whose hook may read without bound may map (KiB): enough for a deploy, small
/// enough that reading `/dev/zero` whole fails the hook rather than the machine.
const BOUNDED_MEMORY_KIB: u64 = 3 << 20;

fn stack(prefix: &str) -> Stack {
    let stack = Stack::empty(prefix);
    stack.add_settings(SETTINGS);
    stack
}

/// A value no other test and no earlier run has, to look for later.
fn marker(what: &str) -> String {
    unique_project(what)
}

/// A service of `image` running `command` (a YAML sequence) until removed, ready as soon as
/// it runs; `extra` holds further keys, each line indented by four spaces.
fn service(name: &str, image: &str, command: &str, extra: &str) -> String {
    format!(
        "  {name}:\n    image: {image}\n    command: {command}\n    stop_grace_period: 1s\n    healthcheck: {{test: [CMD, 'true']}}\n{extra}"
    )
}

/// A service of the Debian image that sleeps until removed.
fn sleeper(name: &str, extra: &str) -> String {
    service(name, DEBIAN, "[sleep, infinity]", extra)
}

/// A push's output (git's and the hook's, as the pusher sees it).
struct Pushed {
    output: String,
    /// The push did not end within its limit; it was killed with its hook.
    timed_out: bool,
}

/// `git push prod main`, as `mallory`.
fn push(stack: &Stack) -> Pushed {
    push_with(stack, "main", &[], None, PUSH_LIMIT)
}

/// `git push prod <refspec>` with `env` added to the pusher's environment (the hook inherits
/// it). The push and its hook run in a process group of their own, killed after `within`;
/// `memory_kib` bounds what each of them may map.
fn push_with(
    stack: &Stack,
    refspec: &str,
    env: &[(&str, &str)],
    memory_kib: Option<u64>,
    within: Duration,
) -> Pushed {
    let script = match memory_kib {
        Some(kib) => format!("ulimit -v {kib} && exec git push -q prod \"$1\""),
        None => "exec git push -q prod \"$1\"".to_owned(),
    };
    let mut child = Command::new("sh")
        .args(["-c", &script, "sh", refspec])
        .current_dir(&stack.work)
        .env("DEPLOY_USER", "mallory")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("failed to start git push");
    let readers = [
        drain(child.stdout.take().unwrap()),
        drain(child.stderr.take().unwrap()),
    ];
    let pid = child.id();
    let (done, ended) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let timed_out = ended.recv_timeout(within).is_err();
    if timed_out {
        let group = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap());
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = ended.recv();
    }
    let output: Vec<u8> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    Pushed {
        output: String::from_utf8_lossy(&output).into_owned(),
        timed_out,
    }
}

fn drain(mut from: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        bytes
    })
}

/// The line of `output` that refuses `key_path`, if any.
fn refusal<'a>(output: &'a str, key_path: &str) -> Option<&'a str> {
    output
        .lines()
        .find(|l| l.contains(key_path) && l.contains("refused"))
}

/// Asserts that one line of the push's output, and one of the stack's newest build log, says
/// `<key_path>: refused: …`.
fn assert_refused(stack: &Stack, output: &str, key_path: &str) {
    assert!(
        refusal(output, key_path).is_some(),
        "no line of the pusher's output refuses `{key_path}`:\n{output}"
    );
    let log = latest_log(stack);
    assert!(
        refusal(&log, key_path).is_some(),
        "no line of the build log refuses `{key_path}`:\n{log}"
    );
}

/// Asserts one line of `output` holds every one of `parts`.
fn assert_line(output: &str, parts: &[&str]) {
    assert!(
        output.lines().any(|l| parts.iter().all(|p| l.contains(p))),
        "no line holds all of {parts:?}:\n{output}"
    );
}

/// The newest build log of `stack`, or an empty string when there is none.
fn latest_log(stack: &Stack) -> String {
    let bytes = std::fs::read(stack.root.join("build-logs/latest")).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Every build log of `stack`, one string.
fn all_logs(stack: &Stack) -> String {
    let dir = stack.root.join("build-logs");
    stack
        .logs()
        .iter()
        .map(|name| String::from_utf8_lossy(&std::fs::read(dir.join(name)).unwrap()).into_owned())
        .collect()
}

fn inspect(id: &str) -> ContainerInspectResponse {
    let id = id.to_owned();
    block(async move { docker().await.inspect_container(&id, None).await.unwrap() })
}

/// Every container of `project`, inspected.
fn inspected(project: &str) -> Vec<ContainerInspectResponse> {
    containers(project)
        .into_iter()
        .map(|c| inspect(c.id.as_deref().unwrap()))
        .collect()
}

/// The container of `service` in `project`, inspected.
fn inspected_service(project: &str, service: &str) -> ContainerInspectResponse {
    inspect(service_container(project, service).id.as_deref().unwrap())
}

fn env_of(c: &ContainerInspectResponse) -> Vec<String> {
    c.config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
}

fn name_of(c: &ContainerInspectResponse) -> String {
    c.name.clone().unwrap_or_default()
}

/// Whether the container is running (so that `exec` can reach it).
fn running(c: &ContainerInspectResponse) -> bool {
    c.state.as_ref().and_then(|s| s.running).unwrap_or(false)
}

/// Whether `path` in the container is the host's `/`: the same filesystem and inode. A
/// device number names a filesystem alike in every mount namespace.
fn shows_host_root(id: &str, path: &str) -> bool {
    let root = std::fs::metadata("/").unwrap();
    let (code, out) = exec(id, &["stat", "-c", "%d %i", &format!("{path}/.")]);
    code == 0 && out.trim() == format!("{} {}", root.dev(), root.ino())
}

/// Asserts that no running container of `project` shows the host's `/` at any of its
/// mounts; `context` goes into the message.
fn assert_no_host_root(project: &str, context: &str) {
    for c in inspected(project).iter().filter(|c| running(c)) {
        for m in c.mounts.iter().flatten() {
            let at = m.destination.clone().unwrap_or_default();
            assert!(
                !shows_host_root(c.id.as_deref().unwrap(), &at),
                "`{}` has the host's `/` mounted at {at}:\n{context}",
                name_of(c)
            );
        }
    }
}

/// The host paths bind-mounted into a container (symlinks resolved), with whether each is
/// writable.
fn bind_sources(c: &ContainerInspectResponse) -> Vec<(PathBuf, bool)> {
    c.mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let source = m.source.as_deref()?;
            let real = std::fs::canonicalize(source).unwrap_or_else(|_| source.into());
            Some((real, m.rw.unwrap_or(true)))
        })
        .collect()
}

/// Names of the Docker volumes a container mounts.
fn volume_names(c: &ContainerInspectResponse) -> Vec<String> {
    c.mounts
        .iter()
        .flatten()
        .filter_map(|m| m.name.clone())
        .collect()
}

/// Ids of the networks a container is attached to.
fn network_ids(c: &ContainerInspectResponse) -> Vec<String> {
    c.network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .map(|n| n.values().filter_map(|e| e.network_id.clone()).collect())
        .unwrap_or_default()
}

fn network_id(name: &str) -> String {
    let name = name.to_owned();
    block(async move {
        docker()
            .await
            .inspect_network(
                &name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
            .unwrap()
            .id
            .unwrap()
    })
}

/// Waits until the container's log holds `want`, for at most `within`.
fn wait_for_log(id: &str, want: &str, within: Duration) -> bool {
    let (id, want) = (id.to_owned(), want.to_owned());
    block(async move {
        let docker = docker().await;
        let options = bollard::query_parameters::LogsOptions {
            stdout: true,
            stderr: true,
            follow: true,
            ..Default::default()
        };
        let mut logs = docker.logs(&id, Some(options));
        let seen = async {
            let mut text = String::new();
            while let Some(Ok(chunk)) = logs.next().await {
                text.push_str(&chunk.to_string());
                if text.contains(&want) {
                    return true;
                }
            }
            false
        };
        tokio::time::timeout(within, seen).await.unwrap_or(false)
    })
}

/// Whether someone holds `flock` on `path` now.
fn lock_is_held(path: &Path) -> bool {
    let out = run(Command::new("flock")
        .args(["--nonblock", "--conflict-exit-code", "99"])
        .arg(path)
        .arg("true"));
    out.status.code() == Some(99)
}

fn sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every entry under `dir` (links not followed) with its kind, mode and a hash of its content
/// or its link's target, to compare before and after.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let kind = meta.file_type();
            let what = if kind.is_symlink() {
                format!("link -> {}", std::fs::read_link(&path).unwrap().display())
            } else if kind.is_dir() {
                walk(&path, out);
                format!("dir {:o}", meta.mode())
            } else if kind.is_file() {
                format!(
                    "file {:o} {}",
                    meta.mode(),
                    sha256(&std::fs::read(&path).unwrap())
                )
            } else {
                format!("special {:o}", meta.mode())
            };
            out.insert(path, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, &mut out);
    out
}

/// Asserts that no value of `secrets` is in `text`, saying where `text` came from. The
/// message shows `text` with every secret masked: some are the host's.
fn assert_absent(text: &str, secrets: &[String], place: &str) {
    if let Some(i) = secrets.iter().position(|s| text.contains(s.as_str())) {
        let mut masked = text.to_owned();
        for (n, s) in secrets.iter().enumerate() {
            masked = masked.replace(s.as_str(), &format!("<secret #{n}>"));
        }
        panic!("secret #{i} appears in {place}:\n{masked}");
    }
}

/// Asserts that no value of `secrets` is in any image of `project`: its history, its config
/// or any byte of its layers.
fn assert_not_in_images(project: &str, secrets: &[String]) {
    let project = project.to_owned();
    let secrets = secrets.to_vec();
    block(async move {
        let docker = docker().await;
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("deploy.project={project}")],
        )]);
        let images = docker
            .list_images(Some(bollard::query_parameters::ListImagesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .unwrap();
        for image in images {
            for layer in docker.image_history(&image.id).await.unwrap() {
                assert_absent(&layer.created_by, &secrets, "an image's history");
            }
            let config = docker.inspect_image(&image.id).await.unwrap().config;
            assert_absent(&format!("{config:?}"), &secrets, "an image's config");
            let longest = secrets.iter().map(String::len).max().unwrap_or(0);
            let mut export = docker.export_image(&image.id);
            let mut window: Vec<u8> = Vec::new();
            while let Some(chunk) = export.next().await {
                window.extend_from_slice(&chunk.unwrap());
                for s in &secrets {
                    assert!(
                        !window.windows(s.len()).any(|w| w == s.as_bytes()),
                        "a secret is inside an image of `{project}`"
                    );
                }
                let keep = window.len().saturating_sub(longest);
                window.drain(..keep);
            }
        }
    });
}

/// The lines of the host's `/etc/shadow`, each cut after its second field (`root:*:`): what a
/// leak of the file shows, and what no message about it may quote.
fn shadow_lines() -> Vec<String> {
    std::fs::read_to_string("/etc/shadow")
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let fields: Vec<&str> = l.splitn(3, ':').collect();
            format!("{}:{}:", fields[0], fields.get(1).unwrap_or(&""))
        })
        .collect()
}

/// A file outside every ROOT standing in for a host file an attack could read or write.
fn host_file(stack: &Stack, name: &str, contents: &str) -> PathBuf {
    let path = stack.base.path().join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A deployed neighbour: another project on the same engine, with a secret, a host env
/// file, a named volume, a network, a server (`db`) that answers only on its loopback with
/// `secret`, and an image it built (`<project>-web`). Returns the stack and `db`, inspected.
fn neighbour(prefix: &str, secret: &str) -> (Stack, ContainerInspectResponse) {
    let other = stack(prefix);
    std::fs::write(other.root.join("code/.secrets/db_password"), secret).unwrap();
    std::fs::write(
        other.root.join("host.env"),
        format!("OTHER_TOKEN={secret}\n"),
    )
    .unwrap();
    other.add_settings("env_file: host.env\n");
    let command = format!(
        "[sh, -c, 'echo {secret} > /data/index.html && exec python3 -m http.server 8000 --bind 127.0.0.1 --directory /data']"
    );
    other.write(
        "Dockerfile",
        "FROM debian:bookworm-slim\nRUN echo neighbour > /built\n",
    );
    other.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}  web:\n    build: .\n    command: [sleep, infinity]\n    stop_grace_period: 1s\n    healthcheck: {{test: [CMD, 'true']}}\nvolumes:\n  data: {{}}\nnetworks:\n  net: {{}}\n",
            service(
                "db",
                PYTHON,
                &command,
                "    ipc: shareable\n    volumes: [\"data:/data\"]\n    networks: [net]\n"
            )
        ),
    );
    other.commit("the neighbour");
    let pushed = push(&other);
    assert!(
        pushed.output.contains("deployed"),
        "precondition: the neighbour deploys:\n{}",
        pushed.output
    );
    let db = inspected_service(&other.project, "db");
    (other, db)
}

#[test]
fn issue17_f01_config_file_symlinks_are_refused() {
    let other_secret = marker("otherpw");
    let other = stack("f01o");
    std::fs::write(other.root.join("code/.secrets/db_password"), &other_secret).unwrap();
    let stack = stack("f01");
    symlink("/etc/shadow", stack.work.join("sh")).unwrap();
    symlink("/var/run/docker.sock", stack.work.join("dsock")).unwrap();
    symlink(
        other.root.join("code/.secrets/db_password"),
        stack.work.join("other"),
    )
    .unwrap();
    let configs = "    configs:\n      - {source: sh, target: /cfg/sh}\n      - {source: dsock, target: /cfg/dsock}\n      - {source: other, target: /cfg/other}\n";
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}configs:\n  sh: {{file: ./sh}}\n  dsock: {{file: ./dsock}}\n  other: {{file: ./other}}\n",
            service("app", PYTHON, "[sleep, infinity]", configs)
        ),
    );
    stack.commit("configs through links");
    let pushed = push(&stack);

    let shadow = shadow_lines();
    let ping = "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.sendall(b'GET /_ping HTTP/1.0\\r\\n\\r\\n')\nprint(s.recv(4096).decode())";
    for c in inspected(&stack.project).iter().filter(|c| running(c)) {
        let id = c.id.as_deref().unwrap();
        let (_, read) = exec(id, &["cat", "/cfg/sh"]);
        assert!(
            !read.contains(&shadow[0]),
            "the container read the host's /etc/shadow through `configs.sh`"
        );
        let (_, read) = exec(id, &["cat", "/cfg/other"]);
        assert!(
            !read.contains(&other_secret),
            "the container read another ROOT's secret through `configs.other`"
        );
        let (_, answer) = exec(id, &["python3", "-c", ping, "/cfg/dsock"]);
        assert!(
            !answer.contains("HTTP/1."),
            "the container called the Docker API through `configs.dsock` (root on the host):\n{answer}"
        );
    }
    for key in [
        "configs.sh.file",
        "configs.dsock.file",
        "configs.other.file",
    ] {
        assert_refused(&stack, &pushed.output, key);
    }
    assert!(
        containers(&stack.project).is_empty(),
        "a refused push runs nothing"
    );
}

#[test]
fn issue17_f02_deploys_own_directories_are_not_mounted_or_written_through() {
    let stack = stack("f02");
    let configs = stack.root.join("configs");
    std::fs::create_dir_all(&configs).unwrap();
    let real_configs = std::fs::canonicalize(&configs).unwrap();
    let git_hook = "#!/bin/sh\necho the real hook\n";
    let standin = host_file(&stack, "post-receive-standin", git_hook);

    // First push of the attack: mount `../configs` and plant `configs/hook` from inside.
    let plant = format!(
        "[sh, -c, 'ln -sfn {} /deploy-configs/hook && exec sleep infinity']",
        standin.display()
    );
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}",
            service(
                "app",
                DEBIAN,
                &plant,
                "    volumes: [\"../configs:/deploy-configs\"]\n"
            )
        ),
    );
    stack.commit("mount deploy's configs");
    let pushed = push(&stack);
    for c in inspected(&stack.project) {
        for (source, rw) in bind_sources(&c) {
            assert!(
                source != real_configs,
                "`{}` has deploy's `configs/` mounted (writable: {rw}): it can plant links there",
                name_of(&c)
            );
        }
    }
    assert_refused(&stack, &pushed.output, "services.app.volumes[0]");
    assert!(containers(&stack.project).is_empty());

    // Second push: `configs/hook` is a link planted earlier (by hand here, at a file standing
    // in for `code.git/hooks/post-receive`); a `content:` config named `hook` must replace
    // the link, not write through it.
    let _ = std::fs::remove_file(configs.join("hook"));
    symlink(&standin, configs.join("hook")).unwrap();
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}configs:\n  hook:\n    content: |\n      #!/bin/sh\n      touch {}/pwned\n",
            sleeper("app", "    configs: [{source: hook, target: /cfg/hook}]\n"),
            stack.base.path().display()
        ),
    );
    stack.commit("a content config named like the planted link");
    let pushed = push(&stack);
    assert_eq!(
        std::fs::read_to_string(&standin).unwrap(),
        git_hook,
        "writing the config followed the planted link and replaced the git hook:\n{}",
        pushed.output
    );
    let meta = std::fs::symlink_metadata(configs.join("hook")).unwrap();
    assert!(
        !meta.file_type().is_symlink(),
        "`configs/hook` is still a link: deploy must write a new file in its place:\n{}",
        pushed.output
    );
}

#[test]
fn issue17_f03_a_directory_swapped_for_a_link_during_the_build_is_not_mounted() {
    let stack = stack("f03");
    // The previous revision's container has the work tree mounted read-write. When the next
    // revision's `data/` appears it waits for the preflight to pass, then swaps `data/` for
    // a link to `/` while the slow build runs.
    stack.write(
        "swap.sh",
        "while :; do\n  if [ -d /work/data ] && [ ! -L /work/data ]; then\n    sleep 2\n    rm -rf /work/data\n    ln -s / /work/data\n    echo swapped\n  fi\n  sleep 0.1\ndone\n",
    );
    let swapper = service(
        "w",
        DEBIAN,
        "[sh, /work/swap.sh]",
        "    volumes: [\".:/work\"]\n",
    );
    stack.write("docker-compose.yml", &format!("services:\n{swapper}"));
    stack.commit("a service with the work tree mounted");
    let pushed = push(&stack);
    assert!(
        pushed.output.contains("deployed"),
        "precondition: the work tree may be mounted read-write:\n{}",
        pushed.output
    );

    stack.write("data/.keep", "");
    stack.write("Dockerfile", "FROM debian:bookworm-slim\nRUN sleep 5\n");
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{swapper}  b:\n    build: .\n    command: [sleep, infinity]\n    stop_grace_period: 1s\n    healthcheck: {{test: [CMD, 'true']}}\n    volumes: [\"./data:/data\"]\n"
        ),
    );
    stack.commit("mount ./data, slowly");
    let pushed = push(&stack);
    // Docker follows a link in a bind source when it mounts it: the swap shows as the
    // host's `/` inside the new container.
    assert_no_host_root(
        &stack.project,
        &format!(
            "the bind source was swapped after it was checked\n{}",
            pushed.output
        ),
    );
    assert_refused(&stack, &pushed.output, "services.b.volumes[0]");
}

#[test]
fn issue17_f04_volume_driver_opts_are_refused() {
    let stack = stack("f04");
    symlink("/", stack.work.join("rootlink")).unwrap();
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}volumes:\n  v1:\n    driver_opts: {{type: none, o: bind, device: {}}}\n  v2:\n    driver_opts: {{type: tmpfs, o: rbind, device: /}}\n",
            sleeper("app", "    volumes: [\"v1:/v1\", \"v2:/v2\"]\n"),
            stack.root.join("code/rootlink").display()
        ),
    );
    stack.commit("volumes onto the host's root");
    let pushed = push(&stack);
    assert_no_host_root(&stack.project, "through a volume's driver_opts");
    assert_refused(&stack, &pushed.output, "volumes.v1.driver_opts");
    assert_refused(&stack, &pushed.output, "volumes.v2.driver_opts");
    assert!(containers(&stack.project).is_empty());
}

#[test]
fn issue17_f05_a_build_context_through_a_link_is_refused() {
    let stack = stack("f05");
    let secret = marker("hostfile");
    host_file(&stack, "host-file", &format!("{secret}\n"));
    // `ctx` leads to the directory holding ROOT; the Dockerfile sits in the pushed tree,
    // which is inside that context.
    symlink("../..", stack.work.join("ctx")).unwrap();
    stack.write(
        "Dockerfile.steal",
        "FROM debian:bookworm-slim\nCOPY host-file /stolen\nRUN cat /stolen\n",
    );
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n  app:\n    build:\n      context: ./ctx\n      dockerfile: {}/code/Dockerfile.steal\n    command: [sleep, infinity]\n    stop_grace_period: 1s\n    healthcheck: {{test: [CMD, 'true']}}\n",
            stack.project
        ),
    );
    stack.commit("a build context outside the tree");
    let pushed = push(&stack);
    assert_absent(
        &pushed.output,
        std::slice::from_ref(&secret),
        "the pusher's output (the build read a file outside ROOT)",
    );
    assert_absent(
        &all_logs(&stack),
        std::slice::from_ref(&secret),
        "the build log",
    );
    assert_not_in_images(&stack.project, std::slice::from_ref(&secret));
    assert_refused(&stack, &pushed.output, "services.app.build.context");
}

#[test]
fn issue17_f06_env_files_are_checked_before_they_are_read() {
    let other_secret = marker("otherenv");
    let other = stack("f06o");
    std::fs::write(
        other.root.join("host.env"),
        format!("OTHER_TOKEN={other_secret}\n"),
    )
    .unwrap();
    let stack = stack("f06");

    // An env file and the interpolation `.env`, each a link to another ROOT's `host.env`.
    symlink(other.root.join("host.env"), stack.work.join("other.env")).unwrap();
    symlink(other.root.join("host.env"), stack.work.join(".env")).unwrap();
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}",
            sleeper(
                "app",
                "    env_file: [./other.env]\n    environment: [\"FROM_DOTENV=${OTHER_TOKEN}\"]\n"
            )
        ),
    );
    stack.commit("env from another ROOT");
    let pushed = push(&stack);
    let secrets = [other_secret.clone()];
    for c in inspected(&stack.project) {
        assert_absent(
            &env_of(&c).join("\n"),
            &secrets,
            "a container's env (read from another ROOT)",
        );
    }
    assert_absent(&pushed.output, &secrets, "the pusher's output");
    assert_refused(&stack, &pushed.output, "services.app.env_file[0]");
    assert!(containers(&stack.project).is_empty());

    // Files the policy refuses are not read at all: no message quotes a line of them.
    std::fs::remove_file(stack.work.join(".env")).unwrap();
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}",
            sleeper(
                "app",
                "    env_file: [/etc/shadow, ../deploy.yml, ./other.env]\n"
            )
        ),
    );
    stack.commit("env files outside the tree");
    let pushed = push(&stack);
    let settings = std::fs::read_to_string(stack.root.join("deploy.yml")).unwrap();
    let mut quoted: Vec<String> = shadow_lines();
    quoted.extend(
        settings
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned),
    );
    quoted.push(other_secret);
    assert_absent(&pushed.output, &quoted, "the pusher's output");
    assert_absent(&all_logs(&stack), &quoted, "the build log");
    for key in [
        "services.app.env_file[0]",
        "services.app.env_file[1]",
        "services.app.env_file[2]",
    ] {
        assert_refused(&stack, &pushed.output, key);
    }
    assert!(containers(&stack.project).is_empty());
}

#[test]
fn issue17_f07_another_projects_namespaces_volumes_and_networks_are_refused() {
    let other_secret = marker("loopback");
    let (other, db) = neighbour("f07o", &other_secret);
    let (db_name, db_id) = (
        name_of(&db).trim_start_matches('/').to_owned(),
        db.id.clone().unwrap(),
    );
    let volume = format!("{}_data", other.project);
    let network = format!("{}_net", other.project);
    let other_network = network_id(&network);

    let stack = stack("f07");
    let join = format!("container:{db_name}");
    let get =
        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8000/').read().decode())";
    stack.write(
        "Dockerfile",
        &format!("FROM python:3.11-slim\nRUN python3 -c \"{get}\" || true\n"),
    );
    let services = [
        sleeper("pidspy", &format!("    pid: \"{join}\"\n")),
        sleeper("ipcspy", &format!("    ipc: \"{join}\"\n")),
        service(
            "netspy",
            PYTHON,
            "[sleep, infinity]",
            &format!("    network_mode: \"{join}\"\n"),
        ),
        format!(
            "  builder:\n    build: {{context: ., network: \"{join}\"}}\n    command: [sleep, infinity]\n    stop_grace_period: 1s\n    healthcheck: {{test: [CMD, 'true']}}\n"
        ),
        service(
            "extvol",
            DEBIAN,
            "[sh, -c, 'echo pwned > /v/pwned-external && exec sleep infinity']",
            "    volumes: [\"stolen:/v\"]\n",
        ),
        service(
            "namevol",
            DEBIAN,
            "[sh, -c, 'echo pwned > /v/pwned-named && exec sleep infinity']",
            "    volumes: [\"named:/v\"]\n",
        ),
        sleeper("extnet", "    networks: [stolennet]\n"),
        sleeper("namenet", "    networks: [namednet]\n"),
    ];
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}volumes:\n  stolen: {{external: true, name: {volume}}}\n  named: {{name: {volume}}}\nnetworks:\n  stolennet: {{external: true, name: {network}}}\n  namednet: {{name: {network}}}\n",
            services.concat()
        ),
    );
    stack.commit("join the neighbour");
    let pushed = push(&stack);

    assert_absent(
        &pushed.output,
        std::slice::from_ref(&other_secret),
        "the build output (a build joined the neighbour's network)",
    );
    let (_, files) = exec(&db_id, &["ls", "/data"]);
    assert!(
        !files.contains("pwned"),
        "a container wrote to the neighbour's volume: {files}"
    );
    for c in inspected(&stack.project) {
        let host = c.host_config.clone().unwrap_or_default();
        for (key, mode) in [
            ("pid", host.pid_mode),
            ("ipc", host.ipc_mode),
            ("network_mode", host.network_mode),
        ] {
            let mode = mode.unwrap_or_default();
            assert!(
                !mode.contains(&db_name) && !mode.contains(&db_id),
                "`{}` joined the neighbour's container ({key}: {mode})",
                name_of(&c)
            );
        }
        assert!(
            !volume_names(&c).contains(&volume),
            "`{}` mounts the neighbour's volume",
            name_of(&c)
        );
        assert!(
            !network_ids(&c).contains(&other_network),
            "`{}` is on the neighbour's network",
            name_of(&c)
        );
    }
    for key in [
        "services.pidspy.pid",
        "services.ipcspy.ipc",
        "services.netspy.network_mode",
        "services.builder.build.network",
        "volumes.stolen",
        "volumes.named",
        "networks.stolennet",
        "networks.namednet",
    ] {
        assert_refused(&stack, &pushed.output, key);
    }
    assert!(containers(&stack.project).is_empty());

    // An operator may name external networks and volumes the project can use.
    let own = format!("{}_shared", stack.project);
    let (own_network, labels) = (own.clone(), stack.project.clone());
    block(async move {
        docker()
            .await
            .create_network(bollard::models::NetworkCreateRequest {
                name: own_network,
                labels: Some(HashMap::from([("deploy.project".to_owned(), labels)])),
                ..Default::default()
            })
            .await
            .unwrap();
    });
    stack.add_settings(&format!("allow:\n  external_networks: [{own}]\n"));
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}networks:\n  shared: {{external: true, name: {own}}}\n",
            sleeper("app", "    networks: [shared]\n")
        ),
    );
    stack.commit("an allowed external network");
    let pushed = push(&stack);
    assert!(
        pushed.output.contains("deployed"),
        "an allowed external network is usable:\n{}",
        pushed.output
    );
    // The attacker's containers use the neighbour's network and volume: they go first.
    drop(stack);
    drop(other);
}

#[test]
fn issue17_f08_a_built_image_cannot_take_another_projects_name() {
    let other = stack("f08o");
    other.write("Dockerfile", "FROM debian:bookworm-slim\nRUN echo a > /a\n");
    other.write(
        "docker-compose.yml",
        "services:\n  app:\n    build: .\n    command: [sleep, infinity]\n    stop_grace_period: 1s\n    healthcheck: {test: [CMD, 'true']}\n",
    );
    let other_sha = other.commit("the neighbour");
    let pushed = push(&other);
    assert!(
        pushed.output.contains("deployed"),
        "precondition: the neighbour deploys:\n{}",
        pushed.output
    );
    let repo = format!("{}-app", other.project);
    let tags = [format!("{repo}:latest"), format!("{repo}:{other_sha}")];
    let before: Vec<Option<String>> = tags.iter().map(|t| image_id(t)).collect();
    assert!(before.iter().all(Option::is_some), "{tags:?}: {before:?}");

    let stack = stack("f08");
    stack.write("Dockerfile", "FROM debian:bookworm-slim\nRUN echo b > /b\n");
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n  app:\n    build: .\n    image: {repo}\n    command: [sleep, infinity]\n    stop_grace_period: 1s\n    healthcheck: {{test: [CMD, 'true']}}\n"
        ),
    );
    stack.commit("build under the neighbour's name");
    let pushed = push(&stack);
    let after: Vec<Option<String>> = tags.iter().map(|t| image_id(t)).collect();
    assert_eq!(
        after, before,
        "the push re-tagged the neighbour's image {tags:?}:\n{}",
        pushed.output
    );
    assert_refused(&stack, &pushed.output, "services.app.image");
    // The attacker's containers use the neighbour's network and volume: they go first.
    drop(stack);
    drop(other);
}

#[test]
fn issue17_f09_the_deploy_lock_cannot_be_mounted() {
    let stack = stack("f09");
    let lock = stack.root.join("deploy.lock");
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}",
            service(
                "app",
                DEBIAN,
                "[flock, /lock, sh, -c, 'echo got-lock && exec sleep infinity']",
                "    volumes: [\"../deploy.lock:/lock\"]\n"
            )
        ),
    );
    stack.commit("hold the deploy lock");
    let pushed = push(&stack);
    let real_lock = std::fs::canonicalize(&lock).unwrap_or(lock.clone());
    for c in inspected(&stack.project) {
        if bind_sources(&c).iter().any(|(s, _)| *s == real_lock) {
            let took = wait_for_log(
                c.id.as_deref().unwrap(),
                "got-lock",
                Duration::from_secs(15),
            );
            panic!(
                "`{}` has `deploy.lock` mounted (took the lock: {took}, held now: {}): every later deploy and `deploy down` would wait for ever",
                name_of(&c),
                lock_is_held(&lock)
            );
        }
    }
    assert_refused(&stack, &pushed.output, "services.app.volumes[0]");
    assert!(!lock_is_held(&lock));
}

#[test]
fn issue17_f10_files_are_read_with_bounds() {
    let stack = stack("f10");

    // An env file that never ends.
    symlink("/dev/zero", stack.work.join("zero.env")).unwrap();
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}",
            sleeper("app", "    env_file: [./zero.env]\n")
        ),
    );
    stack.commit("env from /dev/zero");
    let pushed = push_with(&stack, "main", &[], Some(BOUNDED_MEMORY_KIB), PUSH_LIMIT);
    // With its memory bounded, a read without bound ends in an allocation failure.
    let exhausted = ["out of memory", "memory allocation"]
        .iter()
        .any(|m| pushed.output.contains(m));
    assert!(
        !pushed.timed_out && !exhausted,
        "the hook read /dev/zero until its memory ran out (timed out: {}):\n{}",
        pushed.timed_out,
        pushed.output
    );
    assert_refused(&stack, &pushed.output, "services.app.env_file[0]");
    std::fs::remove_file(stack.work.join("zero.env")).unwrap();

    // An env file in the repo above the 1 MiB limit (comments, so Docker would take it).
    let padding = "# padding to make this env file larger than the limit\n".repeat(22_000);
    stack.write("big.env", &format!("{padding}SMALL=1\n"));
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}",
            sleeper("app", "    env_file: [./big.env]\n")
        ),
    );
    stack.commit("a large env file");
    let pushed = push(&stack);
    assert!(
        containers(&stack.project).is_empty(),
        "a deploy went ahead with an env file above 1 MiB:\n{}",
        pushed.output
    );
    assert_line(&pushed.output, &["env_file", "larger than"]);
    std::fs::remove_file(stack.work.join("big.env")).unwrap();

    // A secret file that is a fifo: reading it waits for a writer that never comes.
    let fifo = stack.root.join("code/.secrets/pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}secrets:\n  x: {{file: ./.secrets/pipe}}\n",
            sleeper("app", "    secrets: [x]\n")
        ),
    );
    stack.commit("a fifo as a secret");
    let pushed = push_with(&stack, "main", &[], None, QUICK_PUSH_LIMIT);
    assert!(
        !pushed.timed_out,
        "the deploy hung reading a fifo as a secret:\n{}",
        pushed.output
    );
    assert_line(&pushed.output, &["secrets.x", "not a regular file"]);
    std::fs::remove_file(&fifo).unwrap();

    // A blob above `blob_size_limit`, arriving packed.
    stack.add_settings("blob_size_limit: 1MiB\n");
    git(
        &stack.root.join("code.git"),
        &["config", "receive.unpackLimit", "1"],
    );
    // Incompressible, so that neither the pack nor the object is small.
    let mut noise = Vec::with_capacity(3 << 20);
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    while noise.len() < 3 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(stack.work.join("big.bin"), noise).unwrap();
    stack.write(
        "docker-compose.yml",
        &format!("services:\n{}", sleeper("app", "")),
    );
    stack.commit("a 3 MiB blob");
    let pushed = push(&stack);
    assert!(
        !stack.root.join("code/big.bin").exists(),
        "the 3 MiB blob was checked out despite `blob_size_limit: 1MiB`:\n{}",
        pushed.output
    );
    assert_line(&pushed.output, &["big.bin", "blob_size_limit"]);
}

#[test]
fn issue17_f11_the_build_log_and_the_pushers_stream_are_capped() {
    let stack = stack("f11");
    stack.add_settings("build_log_limit: 1MiB\n");
    // The project's name makes the step new to the build cache, so it runs and prints.
    stack.write(
        "Dockerfile",
        &format!(
            "FROM debian:bookworm-slim\nRUN echo {} && yes | head -c 30000000\n",
            stack.project
        ),
    );
    stack.write(
        "docker-compose.yml",
        "services:\n  app:\n    build: .\n    command: [sleep, infinity]\n    stop_grace_period: 1s\n    healthcheck: {test: [CMD, 'true']}\n",
    );
    stack.commit("30 MB of build output");
    let pushed = push(&stack);
    // What the hook sent, without git's `remote: ` prefix and padding on each line.
    let relayed: usize = pushed
        .output
        .lines()
        .map(|l| l.strip_prefix("remote:").unwrap_or(l).trim().len() + 1)
        .sum();
    let cap = 1_200 * 1024;
    assert!(
        relayed < cap,
        "the pusher got {relayed} bytes of output despite `build_log_limit: 1MiB`"
    );
    let log = std::fs::metadata(stack.root.join("build-logs/latest"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(
        log > 0 && log < cap as u64,
        "the build log is {log} bytes (want some, under ~1.2 MiB):\n{}",
        pushed.output
    );
    assert!(
        latest_log(&stack).contains("build_log_limit"),
        "the build log says where it was cut"
    );
    assert!(
        pushed.output.contains("build_log_limit"),
        "the pusher's output says where it was cut"
    );
}

#[test]
fn issue17_f12_deeply_nested_yaml_is_refused_before_parsing() {
    let stack = stack("f12");
    let depth = 100_000;
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}",
            sleeper(
                "app",
                &format!("    labels: {}{}\n", "[".repeat(depth), "]".repeat(depth))
            )
        ),
    );
    stack.commit("200 KB of nesting");
    let pushed = push(&stack);
    assert!(!pushed.timed_out, "{}", pushed.output);
    assert!(
        pushed.output.contains("nested deeper than 64"),
        "{}",
        pushed.output
    );
    assert!(containers(&stack.project).is_empty());
}

#[test]
fn issue17_f13_a_tag_named_like_the_branch_does_not_stand_in_for_it() {
    let stack = stack("f13");
    let compose = |which: &str| {
        format!(
            "services:\n{}",
            sleeper("app", &format!("    labels: {{which: {which}}}\n"))
        )
    };
    stack.write("docker-compose.yml", &compose("branch"));
    let tip = stack.commit("the branch");
    let pushed = push(&stack);
    assert!(pushed.output.contains("deployed"), "{}", pushed.output);

    git(&stack.work, &["checkout", "-q", "-b", "side"]);
    stack.write("docker-compose.yml", &compose("tag"));
    let tagged = stack.commit("never on main");
    git(&stack.work, &["checkout", "-q", "main"]);
    let pushed = push_with(
        &stack,
        &format!("{tagged}:refs/tags/main"),
        &[],
        None,
        PUSH_LIMIT,
    );
    assert!(pushed.output.contains("not deployed"), "{}", pushed.output);

    for args in [&[][..], &["--revision", "main"][..]] {
        let out = stack.deploy(args);
        let history = stack.history();
        assert_ne!(
            history[0]["revision"],
            tagged.as_str(),
            "`deploy {args:?}` deployed the tag `main`, a commit never on the branch:\n{}",
            text(&out)
        );
        assert_eq!(history[0]["revision"], tip.as_str(), "{}", text(&out));
        let app = inspected_service(&stack.project, "app");
        let labels = app.config.and_then(|c| c.labels).unwrap_or_default();
        assert_eq!(
            labels.get("deploy.revision").map(String::as_str),
            Some(tip.as_str())
        );
        assert_eq!(labels.get("which").map(String::as_str), Some("branch"));
    }
}

#[test]
fn issue17_f14_secrets_reach_no_env_image_or_log() {
    let stack = stack("f14");
    let secrets = stack.root.join("code/.secrets");
    let token = marker("apptoken");
    std::fs::write(secrets.join("app.env"), format!("APP_TOKEN={token}\n")).unwrap();
    let tokens = [token.clone()];

    // A secret file as an env file.
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}",
            sleeper("app", "    env_file: [./.secrets/app.env]\n")
        ),
    );
    stack.commit("a secret file as an env file");
    let pushed = push(&stack);
    for c in inspected(&stack.project) {
        assert_absent(&env_of(&c).join("\n"), &tokens, "a container's env");
    }
    assert_absent(&pushed.output, &tokens, "the pusher's output");
    assert_line(
        &pushed.output,
        &["services.app.env_file[0]", "refused", "secrets"],
    );
    assert!(containers(&stack.project).is_empty());

    // `.env` as a link to a secret file, feeding the env and a build argument.
    symlink(".secrets/app.env", stack.work.join(".env")).unwrap();
    stack.write(
        "Dockerfile",
        "FROM debian:bookworm-slim\nARG T\nRUN echo \"token: $T\"\n",
    );
    stack.write(
        "docker-compose.yml",
        "services:\n  app:\n    build: {context: ., args: {T: \"${APP_TOKEN}\"}}\n    environment: [\"T=${APP_TOKEN}\"]\n    command: [sleep, infinity]\n    stop_grace_period: 1s\n    healthcheck: {test: [CMD, 'true']}\n",
    );
    stack.commit("a secret file as .env");
    let pushed = push(&stack);
    for c in inspected(&stack.project) {
        assert_absent(&env_of(&c).join("\n"), &tokens, "a container's env");
    }
    assert_not_in_images(&stack.project, &tokens);
    assert_absent(&pushed.output, &tokens, "the pusher's output");
    assert_absent(&all_logs(&stack), &tokens, "the build log");
    assert_line(&pushed.output, &[".env", "refused", "secrets"]);
    std::fs::remove_file(stack.work.join(".env")).unwrap();
    std::fs::remove_file(stack.work.join("Dockerfile")).unwrap();

    // Each line of a multi-line secret, short lines too, printed by a crashing app whose log
    // tail reaches the build log and the pusher.
    let lines = [
        "-----BEGIN TEST KEY-----",
        "Zq7p",
        "Mx9kT2w",
        "QrStUvWxYz0123456789",
        "-----END TEST KEY-----",
    ];
    std::fs::write(secrets.join("multi"), lines.join("\n") + "\n").unwrap();
    stack.write(
        "docker-compose.yml",
        "services:\n  app:\n    image: debian:bookworm-slim\n    command: [sh, -c, 'cat /run/secrets/multi; exit 3']\n    secrets: [multi]\nsecrets:\n  multi: {file: ./.secrets/multi}\n",
    );
    stack.commit("print a multi-line secret and crash");
    let pushed = push(&stack);
    let log = latest_log(&stack);
    let pieces: Vec<String> = lines
        .iter()
        .filter(|l| l.len() >= 4)
        .map(|l| (*l).to_owned())
        .collect();
    assert_absent(&log, &pieces, "the build log");
    assert_absent(&pushed.output, &pieces, "the pusher's output");
    assert!(
        log.contains("***") && pushed.output.contains("***"),
        "precondition: the app's log tail, redacted, is shown:\n{log}"
    );

    // A secret too short to redact without garbling every log.
    std::fs::write(secrets.join("short"), "ab\n").unwrap();
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}secrets:\n  short: {{file: ./.secrets/short}}\n",
            sleeper("app", "    secrets: [short]\n")
        ),
    );
    stack.commit("a two-letter secret");
    let pushed = push(&stack);
    assert!(
        containers(&stack.project).is_empty(),
        "a deploy went ahead with a secret too short to redact:\n{}",
        pushed.output
    );
    assert!(
        pushed.output.contains("shorter than 4"),
        "{}",
        pushed.output
    );

    // Control characters from a build step would let it forge lines on the pusher's terminal.
    // The project's name makes the step new to BuildKit's cache, so it runs and prints.
    stack.write(
        "Dockerfile",
        &format!(
            "FROM debian:bookworm-slim\nRUN echo {} >/dev/null; printf 'a\\rremote: forged\\033[31m\\n'\n",
            stack.project
        ),
    );
    stack.write(
        "docker-compose.yml",
        "services:\n  app:\n    build: .\n    command: [sleep, infinity]\n    stop_grace_period: 1s\n    healthcheck: {test: [CMD, 'true']}\n",
    );
    stack.commit("control characters in the build output");
    let pushed = push(&stack);
    let log = latest_log(&stack);
    for (text, place) in [
        (&log, "the build log"),
        (&pushed.output, "the pusher's output"),
    ] {
        assert!(
            !text.contains('\r') && !text.contains('\x1b'),
            "a raw CR or ESC reached {place}:\n{text:?}"
        );
        assert!(
            text.contains("\\x1b"),
            "ESC is shown escaped in {place}:\n{text}"
        );
        // A progress bar's `\r` redraws are kept as their last redraw, so the forged text
        // can only appear indented under the build step (or after its name in the log),
        // never where git's own `remote:` prefix is.
        // (`Step 2/3 : RUN printf …` shows the command's text, with a backslash.)
        let printed = |l: &&str| l.contains("remote: forged") && !l.contains("printf");
        for line in text.lines().filter(printed) {
            let ours = line.strip_prefix("remote: ").unwrap_or(line);
            assert!(
                !ours.starts_with("remote:"),
                "a line in {place} could pass for one of git's own:\n{line}"
            );
        }
    }
}

#[test]
fn issue17_f18_interpolation_does_not_read_the_hooks_environment() {
    let stack = stack("f18");
    let secret = marker("daemonsecret");
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}",
            sleeper(
                "app",
                "    environment: [\"LEAK=${DEPLOY_DAEMON_SECRET}\"]\n"
            )
        ),
    );
    stack.commit("read the hook's environment");
    let env = [("DEPLOY_DAEMON_SECRET", secret.as_str())];
    let pushed = push_with(&stack, "main", &env, None, PUSH_LIMIT);
    let app = inspected_service(&stack.project, "app");
    assert_absent(
        &env_of(&app).join("\n"),
        std::slice::from_ref(&secret),
        "the container's env (from the hook's environment)",
    );
    assert!(
        env_of(&app).iter().any(|e| e == "LEAK="),
        "{:?}",
        env_of(&app)
    );
    assert_line(&pushed.output, &["DEPLOY_DAEMON_SECRET", "not set"]);

    // The operator's allow-list lets a variable of the environment through.
    stack.add_settings("interpolate_env: [DEPLOY_DAEMON_SECRET]\n");
    stack.commit("again, allowed");
    let pushed = push_with(&stack, "main", &env, None, PUSH_LIMIT);
    let app = inspected_service(&stack.project, "app");
    assert!(
        env_of(&app).contains(&format!("LEAK={secret}")),
        "`interpolate_env` lets the variable through: {:?}\n{}",
        env_of(&app),
        pushed.output
    );
}

#[test]
fn issue17_f19_logging_addresses_are_refused_unless_allowed() {
    let stack = stack("f19");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = format!("tcp://{}", listener.local_addr().unwrap());
    stack.write(
        "docker-compose.yml",
        &format!(
            "services:\n{}",
            sleeper(
                "app",
                &format!(
                    "    logging: {{driver: syslog, options: {{syslog-address: \"{address}\"}}}}\n"
                )
            )
        ),
    );
    stack.commit("log to an address of the pusher's choice");
    let pushed = push(&stack);
    assert!(
        listener.accept().is_err(),
        "the engine connected to {address}, chosen by the pusher:\n{}",
        pushed.output
    );
    assert_refused(
        &stack,
        &pushed.output,
        "services.app.logging.options.syslog-address",
    );
    assert!(containers(&stack.project).is_empty());

    stack.add_settings(&format!("allow:\n  log_addresses: [\"{address}\"]\n"));
    stack.commit("again, allowed");
    let pushed = push(&stack);
    assert!(
        pushed.output.contains("deployed"),
        "an allowed address is usable:\n{}",
        pushed.output
    );
    assert!(
        listener.accept().is_ok(),
        "the engine logs to the allowed address"
    );
}

/// The README's promise in its own words: a repo holding every escape above, pushed at once,
/// changes nothing on the host, in another ROOT or in deploy's own files, and no secret
/// reaches a build log, a container's env or an image.
#[test]
fn issue17_every_escape_in_one_push_changes_nothing_and_leaks_nothing() {
    let other_secret = marker("othersecret");
    let (other, db) = neighbour("allo", &other_secret);
    let db_name = name_of(&db).trim_start_matches('/').to_owned();
    let db_id = db.id.clone().unwrap();
    let other_volume = format!("{}_data", other.project);
    let other_network = format!("{}_net", other.project);
    let other_network_id = network_id(&other_network);
    let other_image = format!("{}-web:latest", other.project);

    let stack = stack("all");
    let host_secret = marker("hostfile");
    let host = host_file(&stack, "host-file", &format!("{host_secret}\n"));
    let git_hook = "#!/bin/sh\necho the real hook\n";
    let standin = host_file(&stack, "post-receive-standin", git_hook);
    let configs = stack.root.join("configs");
    std::fs::create_dir_all(&configs).unwrap();
    symlink(&standin, configs.join("hook")).unwrap();
    let secrets = stack.root.join("code/.secrets");
    let app_token = marker("apptoken");
    std::fs::write(secrets.join("app.env"), format!("APP_TOKEN={app_token}\n")).unwrap();
    let multi = [
        "-----BEGIN TEST KEY-----",
        "Zq7p",
        "Mx9kT2w",
        "-----END TEST KEY-----",
    ];
    std::fs::write(secrets.join("multi"), multi.join("\n") + "\n").unwrap();
    let daemon_secret = marker("daemonsecret");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let log_address = format!("tcp://{}", listener.local_addr().unwrap());

    for (target, link) in [
        (PathBuf::from("/etc/shadow"), "sh"),
        (PathBuf::from("/var/run/docker.sock"), "dsock"),
        (other.root.join("code/.secrets/db_password"), "other"),
        (other.root.join("host.env"), "other.env"),
        (PathBuf::from("/dev/zero"), "zero.env"),
        (PathBuf::from("/"), "rootlink"),
        (PathBuf::from("../.."), "ctx"),
        (PathBuf::from(".secrets/app.env"), ".env"),
    ] {
        symlink(target, stack.work.join(link)).unwrap();
    }
    // Above the size limit; its refusal's wording is `issue17_f10`'s to check.
    stack.write(
        "big.env",
        &"# padding to make this env file larger than the limit\n".repeat(22_000),
    );
    let get =
        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8000/').read().decode())";
    stack.write(
        "Dockerfile.steal",
        &format!(
            "FROM python:3.11-slim\nARG T\nCOPY host-file /stolen\nRUN cat /stolen; echo \"$T\"; python3 -c \"{get}\" || true\n"
        ),
    );
    let join = format!("container:{db_name}");
    let files = format!(
        "    configs:\n      - {{source: sh, target: /cfg/sh}}\n      - {{source: dsock, target: /cfg/dsock}}\n      - {{source: other, target: /cfg/other}}\n      - {{source: hook, target: /cfg/hook}}\n    volumes: [\"../configs:/deploy-configs\", \"../deploy.lock:/lock\", \"v1:/v1\", \"v2:/v2\", \"stolen:/stolen\", \"named:/named\"]\n    env_file: [/etc/shadow, ../deploy.yml, ./other.env, ./.secrets/app.env, ./zero.env, ./big.env]\n    environment: [\"LEAK=${{DEPLOY_DAEMON_SECRET}}\", \"T=${{APP_TOKEN}}\"]\n    logging: {{driver: syslog, options: {{syslog-address: \"{log_address}\"}}}}\n    secrets: [multi]\n    networks: [default, stolennet, namednet]\n"
    );
    let compose = [
        "services:\n".to_owned(),
        sleeper("files", &files),
        sleeper(
            "pidspy",
            &format!("    pid: \"{join}\"\n    ipc: \"{join}\"\n"),
        ),
        service(
            "netspy",
            PYTHON,
            "[sleep, infinity]",
            &format!("    network_mode: \"{join}\"\n"),
        ),
        format!(
            "  thief:\n    build: {{context: ./ctx, dockerfile: {}/code/Dockerfile.steal, network: \"{join}\", args: {{T: \"${{APP_TOKEN}}\"}}}}\n    image: {}-web\n    command: [sleep, infinity]\n    stop_grace_period: 1s\n    healthcheck: {{test: [CMD, 'true']}}\n",
            stack.project, other.project
        ),
        format!(
            "configs:\n  sh: {{file: ./sh}}\n  dsock: {{file: ./dsock}}\n  other: {{file: ./other}}\n  hook:\n    content: |\n      #!/bin/sh\n      touch {}/pwned\n",
            stack.base.path().display()
        ),
        format!(
            "volumes:\n  v1:\n    driver_opts: {{type: none, o: bind, device: {}}}\n  v2:\n    driver_opts: {{type: tmpfs, o: rbind, device: /}}\n  stolen: {{external: true, name: {other_volume}}}\n  named: {{name: {other_volume}}}\n",
            stack.root.join("code/rootlink").display()
        ),
        format!(
            "networks:\n  stolennet: {{external: true, name: {other_network}}}\n  namednet: {{name: {other_network}}}\n"
        ),
        "secrets:\n  multi: {file: ./.secrets/multi}\n".to_owned(),
    ]
    .concat();
    stack.write("docker-compose.yml", &compose);
    stack.commit("every escape at once");

    let watched = [
        host.clone(),
        standin.clone(),
        PathBuf::from("/etc/shadow"),
        stack.root.join("deploy.yml"),
        stack.root.join("code.git/config"),
        stack.root.join("code.git/hooks/post-receive"),
    ];
    let hashes = |files: &[PathBuf]| -> Vec<String> {
        files
            .iter()
            .map(|f| sha256(&std::fs::read(f).unwrap()))
            .collect()
    };
    let files_before = hashes(&watched);
    let hooks_before = snapshot(&stack.root.join("code.git/hooks"));
    let other_before = snapshot(&other.root);
    let other_data = |id: &str| exec(id, &["ls", "-la", "/data"]).1;
    let data_before = other_data(&db_id);
    let image_before = image_id(&other_image);

    let env = [("DEPLOY_DAEMON_SECRET", daemon_secret.as_str())];
    let pushed = push_with(&stack, "main", &env, Some(BOUNDED_MEMORY_KIB), PUSH_LIMIT);
    let output = &pushed.output;
    assert!(!pushed.timed_out, "the push wedged:\n{output}");

    // The host, the other ROOT and deploy's own files.
    assert_eq!(
        hashes(&watched),
        files_before,
        "a watched file changed ({watched:?}):\n{output}"
    );
    assert_eq!(
        snapshot(&stack.root.join("code.git/hooks")),
        hooks_before,
        "{output}"
    );
    assert_eq!(
        snapshot(&other.root),
        other_before,
        "the other ROOT changed:\n{output}"
    );
    assert!(!lock_is_held(&stack.root.join("deploy.lock")), "{output}");
    assert!(
        listener.accept().is_err(),
        "the engine connected to the pusher's log address:\n{output}"
    );

    // The other project on the engine.
    let db_now = inspect(&db_id);
    assert!(running(&db_now), "the neighbour's container stopped");
    assert_eq!(
        other_data(&db_id),
        data_before,
        "the neighbour's volume changed"
    );
    assert_eq!(
        image_id(&other_image),
        image_before,
        "the neighbour's image was re-tagged"
    );
    assert_no_host_root(&stack.project, output);
    let real_configs = std::fs::canonicalize(&configs).unwrap();
    let real_lock = std::fs::canonicalize(stack.root.join("deploy.lock")).ok();
    for c in inspected(&stack.project) {
        let name = name_of(&c);
        for (source, _) in bind_sources(&c) {
            assert!(source != real_configs, "`{name}` mounts deploy's configs/");
            assert!(
                Some(&source) != real_lock.as_ref(),
                "`{name}` mounts deploy.lock"
            );
            assert!(source != Path::new("/"), "`{name}` mounts the host's /");
        }
        let hc = c.host_config.clone().unwrap_or_default();
        for mode in [hc.pid_mode, hc.ipc_mode, hc.network_mode] {
            let mode = mode.unwrap_or_default();
            assert!(
                !mode.contains(&db_name) && !mode.contains(&db_id),
                "`{name}` joined the neighbour's container: {mode}"
            );
        }
        assert!(
            !volume_names(&c).contains(&other_volume),
            "`{name}` mounts the neighbour's volume"
        );
        assert!(
            !network_ids(&c).contains(&other_network_id),
            "`{name}` is on the neighbour's network"
        );
    }

    // No secret anywhere.
    let mut secret_values = vec![
        other_secret,
        host_secret,
        app_token,
        daemon_secret,
        multi[1].to_owned(),
        multi[2].to_owned(),
    ];
    secret_values.extend(shadow_lines());
    assert_absent(output, &secret_values, "the pusher's output");
    assert_absent(&all_logs(&stack), &secret_values, "a build log");
    for project in [&stack.project, &other.project] {
        for c in inspected(project) {
            let place = format!("the env of `{}`", name_of(&c));
            assert_absent(&env_of(&c).join("\n"), &secret_values, &place);
        }
    }
    assert_not_in_images(&stack.project, &secret_values);

    // Every refusal, at once, before anything ran.
    for key in [
        "configs.sh.file",
        "configs.dsock.file",
        "configs.other.file",
        "services.files.volumes[0]",
        "services.files.volumes[1]",
        "volumes.v1.driver_opts",
        "volumes.v2.driver_opts",
        "services.thief.build.context",
        "services.files.env_file[0]",
        "services.files.env_file[1]",
        "services.files.env_file[2]",
        "services.files.env_file[3]",
        "services.files.env_file[4]",
        "services.pidspy.pid",
        "services.pidspy.ipc",
        "services.netspy.network_mode",
        "services.thief.build.network",
        "services.thief.image",
        "volumes.stolen",
        "volumes.named",
        "networks.stolennet",
        "networks.namednet",
        "services.files.logging.options.syslog-address",
    ] {
        assert_refused(&stack, output, key);
    }
    assert_line(output, &[".env", "refused", "secrets"]);
    assert!(containers(&stack.project).is_empty(), "{output}");
    // The attacker's containers use the neighbour's network and volume: they go first.
    drop(stack);
    drop(other);
}
