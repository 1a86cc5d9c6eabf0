//! Issue #5: whatever docker-compose makes of a compose file, `deploy` makes too.
//!
//! Each case is a project under `tests/fixtures/conformance/<case>/`. The same files are
//! deployed twice, under the same project name, one after the other:
//! 1. with `deploy`: committed in a work repo and pushed through the installed hook to a
//!    real deploy root whose `deploy.yml` names the compose files and profiles;
//! 2. with `docker-compose -p <project> -f … up -d`, run in the deploy root's checkout, so
//!    relative paths resolve to the same places.
//!
//! Every container of both runs is read back with the Docker API and compared service by
//! service, field by field. A difference fails the case unless it is listed below as one the
//! README documents, with both values. The case also pins what `deploy config` prints for
//! it (`config.snap` in its folder).
//!
//! A fixture folder may hold `host/`, copied into the deploy root rather than committed (the
//! operator's `code/.secrets/`). Both runs get the same host variables: `UNIQUE` (the project
//! name, for names that must not collide between runs), `WEB_PORT` (a free port) and
//! `FROM_HOST`.
//!
//! `CONFORMANCE_SHOW=1` prints every field of both runs.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use bollard::models::ContainerInspectResponse;
use common::*;

struct Case {
    name: &'static str,
    /// Layered in this order, by `deploy.yml`'s `compose_files` and by `-f`.
    files: &'static [&'static str],
    profiles: &'static [&'static str],
    /// The test creates an external network `<project>-ext-net` and volume
    /// `<project>-ext-vol` before either run, and removes them after.
    externals: bool,
    /// Documented differences this case shows, beyond `EVERY_CASE`.
    allow: &'static [Allow],
}

/// A difference the README's compose section lists as a choice: on `field` of `service`
/// (`*` for any), docker-compose shows `compose` and `deploy` shows `deploy`.
struct Allow {
    service: &'static str,
    field: &'static str,
    compose: &'static str,
    deploy: &'static str,
}

/// Differences every case shows.
const EVERY_CASE: &[Allow] = &[
    // README "Restart policy": without `restart:`, deploy restarts the container after an
    // engine restart or a reboot.
    Allow {
        service: "*",
        field: "restart",
        compose: "no",
        deploy: "unless-stopped",
    },
    // README "Attachable networks": docker-compose 1.29 makes every network attachable;
    // deploy, as compose v2, only those that ask.
    Allow {
        service: "*",
        field: "attachable",
        compose: "true",
        deploy: "false",
    },
    // README "DEPLOY_ENV": every container is told its environment.
    Allow {
        service: "*",
        field: "env DEPLOY_ENV",
        compose: "(absent)",
        deploy: "\"production\"",
    },
];

const CASES: &[Case] = &[
    Case {
        name: "layered",
        files: &["docker-compose.yml", "docker-compose.prod.yml"],
        profiles: &[],
        externals: false,
        // README "Layered ports": a later file's entry for the same container port
        // replaces the earlier one; docker-compose 1.29 keeps both bindings.
        allow: &[Allow {
            service: "web",
            field: "ports",
            compose: r#"["5353/udp -> 127.0.0.1:", "8000/tcp -> 127.0.0.1:WEB_PORT", "8001/tcp -> 127.0.0.1:", "8001/tcp -> :"]"#,
            deploy: r#"["5353/udp -> 127.0.0.1:", "8000/tcp -> 127.0.0.1:WEB_PORT", "8001/tcp -> 127.0.0.1:"]"#,
        }],
    },
    Case {
        name: "profiles",
        files: &["docker-compose.yml"],
        profiles: &["local-db", "tools"],
        externals: false,
        allow: &[],
    },
    Case {
        name: "env-files",
        files: &["docker-compose.yml"],
        profiles: &[],
        externals: false,
        allow: &[
            // README "Env files": values are taken as written; docker-compose 1.29 expands
            // `${VAR}` in them (through python-dotenv).
            Allow {
                service: "app",
                field: "env EXPANDED",
                compose: r#""from-the-host/x""#,
                deploy: r#""${FROM_HOST}/x""#,
            },
            // README "Unset variables": a variable listed without a value that the host does
            // not set is left out; docker-compose 1.29 passes the bare name.
            Allow {
                service: "app",
                field: "env FROM_HOST_TOO",
                compose: "(listed without a value)",
                deploy: "(absent)",
            },
        ],
    },
    Case {
        name: "anchors",
        files: &["docker-compose.yml"],
        profiles: &[],
        externals: false,
        allow: &[],
    },
    Case {
        name: "limits",
        files: &["docker-compose.yml"],
        profiles: &[],
        externals: false,
        allow: &[],
    },
    Case {
        name: "volumes-networks",
        files: &["docker-compose.yml"],
        profiles: &[],
        externals: true,
        allow: &[],
    },
    Case {
        name: "shared-image",
        files: &["docker-compose.yml"],
        profiles: &[],
        externals: false,
        allow: &[],
    },
    Case {
        name: "healthchecks",
        files: &["docker-compose.yml"],
        profiles: &[],
        externals: false,
        allow: &[],
    },
    Case {
        name: "runtime-options",
        files: &["docker-compose.yml"],
        profiles: &[],
        externals: false,
        allow: &[],
    },
    Case {
        name: "subdirectory",
        files: &["ops/docker-compose.yml"],
        profiles: &[],
        externals: false,
        allow: &[],
    },
    Case {
        name: "build-keys",
        files: &["docker-compose.yml"],
        profiles: &[],
        externals: false,
        allow: &[],
    },
    Case {
        name: "joined-services",
        files: &["docker-compose.yml"],
        profiles: &[],
        externals: false,
        // README "Links": the alias a link gives is the linked service's, on the networks
        // both share; docker-compose 1.29 makes it a legacy link of the linking container.
        allow: &[Allow {
            service: "db",
            field: "network aliases",
            compose: r#"{"UNIQUE_default": ["db"]}"#,
            deploy: r#"{"UNIQUE_default": ["database", "db"]}"#,
        }],
    },
    Case {
        name: "replicas",
        files: &["docker-compose.yml"],
        profiles: &[],
        externals: false,
        allow: &[],
    },
    Case {
        name: "postgres",
        files: &["docker-compose.yml"],
        profiles: &[],
        externals: false,
        allow: &[],
    },
];

#[test]
fn build_keys() {
    check("build-keys");
}

#[test]
fn layered() {
    check("layered");
}

#[test]
fn profiles() {
    check("profiles");
}

#[test]
fn env_files() {
    check("env-files");
}

#[test]
fn anchors() {
    check("anchors");
}

#[test]
fn limits() {
    check("limits");
}

#[test]
fn volumes_networks() {
    check("volumes-networks");
}

#[test]
fn shared_image() {
    check("shared-image");
}

#[test]
fn healthchecks() {
    check("healthchecks");
}

#[test]
fn runtime_options() {
    check("runtime-options");
}

#[test]
fn subdirectory() {
    check("subdirectory");
}

#[test]
fn joined_services() {
    check("joined-services");
}

#[test]
fn replicas() {
    check("replicas");
}

#[test]
fn postgres() {
    check("postgres");
}

/// Every case has a test, and every fixture folder a case.
#[test]
fn every_fixture_is_a_case() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(fixture("conformance"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = CASES.iter().map(|c| c.name.to_owned()).collect();
    assert_eq!(on_disk, listed);
    assert!(CASES.len() >= 8);
}

/// What one run made: each service's fields, by service name.
type Observed = BTreeMap<String, BTreeMap<String, String>>;

fn check(name: &str) {
    let case = CASES
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case `{name}`"));
    // Both tools must be there: these tests fail, never skip, without them.
    block(docker());
    let version = Command::new("docker-compose")
        .arg("version")
        .arg("--short")
        .output();
    let version = match version {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        other => panic!(
            "docker-compose does not run ({other:?}): install it (Debian package `docker-compose`, as .ci/run does); these tests never skip"
        ),
    };
    assert!(
        version.starts_with("1.29"),
        "the conformance suite compares with docker-compose 1.29, found `{version}`"
    );
    let dir = fixture("conformance").join(case.name);
    let started = Instant::now();
    let stack = Stack::empty("cf");
    let project = stack.project.clone();
    let vars = [
        ("UNIQUE", project.clone()),
        ("WEB_PORT", stack.port.to_string()),
        ("FROM_HOST", "from-the-host".to_owned()),
    ];
    let _leftovers = Leftovers {
        project: project.clone(),
        externals: case.externals.then(|| Externals::create(&project)),
    };

    // The deploy root: host settings, host variables, the operator's files.
    let host_env: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(stack.root.join("host.env"), host_env).unwrap();
    stack.add_settings(&format!(
        "env_file: host.env\nhealth_timeout: 60s\nmin_free_space: 1GiB\ncompose_files: [{}]\nprofiles: [{}]\n",
        case.files.join(", "),
        case.profiles.join(", ")
    ));
    if case.externals {
        // The security policy lets a project join only the external objects the operator
        // names.
        stack.add_settings(&format!(
            "allow:\n  external_networks: [{project}-ext-net]\n  external_volumes: [{project}-ext-vol]\n"
        ));
    }
    if dir.join("host").is_dir() {
        copy_dir(&dir.join("host"), &stack.root);
    }
    copy_fixture(&dir, &stack.work);
    stack.commit("the fixture");

    // 1. deploy, through a real push.
    let push = stack.push("conformance");
    assert!(
        push.pushed && push.output.contains("deployed"),
        "case `{name}`: the deploy failed:\n{}",
        push.output
    );
    let deployed = observe(
        ("deploy.project", "deploy.service", "deploy.replica"),
        &project,
        &vars,
    );
    let deployed_at = started.elapsed();
    snapshot_config(&stack, &dir, &vars);
    cleanup(&project);

    // 2. docker-compose, in the checkout of the same revision.
    let compose_started = Instant::now();
    let run = ComposeRun {
        project: project.clone(),
        dir: stack.root.join("code"),
        files: case.files,
        profiles: case.profiles,
        vars: vars.to_vec(),
    };
    let up = run.command(&["up", "-d", "--build"]);
    assert!(
        up.status.success(),
        "case `{name}`: docker-compose up failed:\n{}",
        text(&up)
    );
    let composed = observe(
        (
            "com.docker.compose.project",
            "com.docker.compose.service",
            "com.docker.compose.container-number",
        ),
        &project,
        &vars,
    );
    drop(run);
    eprintln!(
        "case `{name}`: deploy {:.1}s, docker-compose {:.1}s",
        deployed_at.as_secs_f64(),
        compose_started.elapsed().as_secs_f64()
    );

    if std::env::var_os("CONFORMANCE_SHOW").is_some() {
        eprintln!("docker-compose: {composed:#?}\ndeploy: {deployed:#?}");
    }
    let report = compare(case, &composed, &deployed);
    assert!(
        report.is_empty(),
        "case `{name}`: deploy differs from docker-compose 1.29 in {} place(s) (fix it, or document \
         the difference in the README's compose section and allow it in tests/conformance.rs):\n{}",
        report.len(),
        report.join("\n")
    );
}

/// The fixture's files, without what only the test reads.
fn copy_fixture(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "host" || name.ends_with(".snap") {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `deploy config` for the case, with what differs between runs replaced by names.
fn snapshot_config(stack: &Stack, dir: &Path, vars: &[(&str, String)]) {
    let out = stack.deploy(&["config"]);
    assert!(out.status.success(), "deploy config failed: {}", text(&out));
    let printed = portable(&String::from_utf8_lossy(&out.stdout), &stack.root, vars);
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(dir);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| insta::assert_snapshot!("config", printed));
}

/// `text` with the deploy root, the project name and the port replaced by placeholders.
fn portable(text: &str, root: &Path, vars: &[(&str, String)]) -> String {
    let mut out = text.replace(&root.display().to_string(), "ROOT");
    for (key, value) in vars {
        if *key != "FROM_HOST" {
            out = out.replace(value.as_str(), key);
        }
    }
    out
}

/// The docker-compose project, brought down (containers, networks, volumes, the images it
/// built) when dropped, whatever happened.
struct ComposeRun {
    project: String,
    dir: PathBuf,
    files: &'static [&'static str],
    profiles: &'static [&'static str],
    vars: Vec<(&'static str, String)>,
}

impl ComposeRun {
    fn command(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("docker-compose");
        cmd.current_dir(&self.dir).arg("-p").arg(&self.project);
        for f in self.files {
            cmd.arg("-f").arg(self.dir.join(f));
        }
        for p in self.profiles {
            cmd.args(["--profile", p]);
        }
        cmd.args(args)
            .envs(self.vars.iter().map(|(k, v)| (k, v)))
            // The classic builder through the API: no BuildKit, which may want a registry.
            .env("COMPOSE_DOCKER_CLI_BUILD", "0")
            .env("DOCKER_BUILDKIT", "0");
        match cmd.stdin(std::process::Stdio::null()).output() {
            Ok(out) => out,
            Err(e) => panic!(
                "cannot run docker-compose ({e}): install it (Debian package `docker-compose`); these tests never skip"
            ),
        }
    }
}

impl Drop for ComposeRun {
    fn drop(&mut self) {
        let _ = self.command(&["down", "-v", "--rmi", "local", "-t", "0"]);
        cleanup_labelled("com.docker.compose.project", &self.project);
    }
}

/// Removes, when dropped, whatever either run left: containers first (a network or an image
/// in use cannot go), then the external network and volume, then the images both runs built
/// (all named after the project, docker-compose's carry no label).
struct Leftovers {
    project: String,
    externals: Option<Externals>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        cleanup(&self.project);
        cleanup_labelled("com.docker.compose.project", &self.project);
        drop(self.externals.take());
        remove_images_named(&self.project);
    }
}

/// The external network and volume a case uses, made outside either tool, removed when
/// dropped.
struct Externals {
    network: String,
    volume: String,
}

impl Externals {
    fn create(project: &str) -> Self {
        let externals = Self {
            network: format!("{project}-ext-net"),
            volume: format!("{project}-ext-vol"),
        };
        block(async {
            let docker = docker().await;
            docker
                .create_network(bollard::models::NetworkCreateRequest {
                    name: externals.network.clone(),
                    ..Default::default()
                })
                .await
                .expect("create the external network");
            docker
                .create_volume(bollard::models::VolumeCreateRequest {
                    name: Some(externals.volume.clone()),
                    ..Default::default()
                })
                .await
                .expect("create the external volume");
        });
        externals
    }
}

impl Drop for Externals {
    fn drop(&mut self) {
        let (network, volume) = (self.network.clone(), self.volume.clone());
        // The runtime of `block` cannot start inside another one; a thread always can.
        let _ = std::thread::spawn(move || {
            block(async {
                let docker = docker().await;
                let _ = docker.remove_network(&network).await;
                let _ = docker
                    .remove_volume(
                        &volume,
                        None::<bollard::query_parameters::RemoveVolumeOptions>,
                    )
                    .await;
            })
        })
        .join();
    }
}

/// Every container whose label `project_key` is `project`, inspected, by service (and by
/// replica after the first: `worker #2`).
fn observe(
    (project_key, service_key, replica_key): (&str, &str, &str),
    project: &str,
    vars: &[(&str, String)],
) -> Observed {
    let inspected: Vec<(String, ContainerInspectResponse)> = block(async {
        let docker = docker().await;
        let filters =
            HashMap::from([("label".to_owned(), vec![format!("{project_key}={project}")])]);
        let list = docker
            .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .unwrap();
        let mut out = Vec::new();
        for c in list {
            let inspect = docker
                .inspect_container(c.id.as_deref().unwrap(), None)
                .await
                .unwrap();
            let service = c
                .labels
                .as_ref()
                .and_then(|l| l.get(service_key))
                .cloned()
                .unwrap_or_else(|| format!("(no `{service_key}` label)"));
            let replica = (c.labels.as_ref())
                .and_then(|l| l.get(replica_key))
                .filter(|n| *n != "1");
            let service = match replica {
                Some(n) => format!("{service} #{n}"),
                None => service,
            };
            out.push((service, inspect));
        }
        out
    });
    let mut by_image: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (service, i) in &inspected {
        by_image
            .entry(i.image.clone().unwrap_or_default())
            .or_default()
            .insert(service.clone());
    }
    let mut observed = Observed::new();
    let mut networks = BTreeSet::new();
    let mut volumes = BTreeSet::new();
    for (service, inspect) in &inspected {
        let sharing = &by_image[&inspect.image.clone().unwrap_or_default()];
        let fields = fields(project, service, inspect, sharing, vars);
        assert!(
            observed.insert(service.clone(), fields).is_none(),
            "two containers for service `{service}` of `{project}`"
        );
        networks.extend(
            inspect
                .network_settings
                .as_ref()
                .and_then(|n| n.networks.as_ref())
                .into_iter()
                .flat_map(|n| n.keys().cloned()),
        );
        volumes.extend(
            inspect
                .mounts
                .iter()
                .flatten()
                .filter(|m| m.typ.as_deref() == Some("volume"))
                .filter_map(|m| m.name.clone())
                .filter(|n| !is_anonymous(n)),
        );
    }
    // The networks and volumes the containers use, as `(network NAME)` and `(volume NAME)`.
    let placeholders = |s: &str| {
        let mut out = s.to_owned();
        for (key, value) in vars {
            out = out.replace(value.as_str(), key);
        }
        out
    };
    let user_labels = |labels: HashMap<String, String>| -> BTreeMap<String, String> {
        labels
            .into_iter()
            .filter(|(k, _)| !k.starts_with("com.docker.compose.") && !k.starts_with("deploy."))
            .collect()
    };
    block(async {
        let docker = docker().await;
        for name in networks {
            let n = docker
                .inspect_network(
                    &name,
                    None::<bollard::query_parameters::InspectNetworkOptions>,
                )
                .await
                .unwrap();
            let fields = BTreeMap::from([
                ("driver", format!("{:?}", n.driver)),
                ("internal", format!("{:?}", n.internal.unwrap_or(false))),
                (
                    "options",
                    format!(
                        "{:?}",
                        n.options
                            .unwrap_or_default()
                            .into_iter()
                            .collect::<BTreeMap<_, _>>()
                    ),
                ),
                (
                    "labels",
                    format!("{:?}", user_labels(n.labels.unwrap_or_default())),
                ),
                ("attachable", format!("{:?}", n.attachable.unwrap_or(false))),
                (
                    "ipam",
                    format!(
                        "{:?}",
                        n.ipam
                            .and_then(|i| i.config)
                            .unwrap_or_default()
                            .into_iter()
                            // Docker's own pools (172.16/12, 192.168/16) differ from run
                            // to run; the fixtures choose theirs in 10/8.
                            .map(|p| match &p.subnet {
                                Some(s) if s.starts_with("10.") => {
                                    format!("{s} {:?} {:?}", p.ip_range, p.gateway)
                                }
                                _ => "(a pool Docker chose)".to_owned(),
                            })
                            .collect::<Vec<_>>()
                    ),
                ),
            ]);
            let fields = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            observed.insert(format!("(network {})", placeholders(&name)), fields);
        }
        for name in volumes {
            let v = docker.inspect_volume(&name).await.unwrap();
            let fields = BTreeMap::from([
                ("driver", format!("{:?}", v.driver)),
                (
                    "options",
                    format!("{:?}", v.options.into_iter().collect::<BTreeMap<_, _>>()),
                ),
                ("labels", format!("{:?}", user_labels(v.labels))),
            ]);
            let fields = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            observed.insert(format!("(volume {})", placeholders(&name)), fields);
        }
    });
    observed
}

fn is_anonymous(volume: &str) -> bool {
    volume.len() == 64 && volume.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The compared fields of one container, normalised where the two tools differ by design
/// (names, the container's own id as an alias, where the deploy root is).
fn fields(
    project: &str,
    service: &str,
    inspect: &ContainerInspectResponse,
    sharing: &BTreeSet<String>,
    vars: &[(&str, String)],
) -> BTreeMap<String, String> {
    let config = inspect.config.clone().unwrap_or_default();
    let host = inspect.host_config.clone().unwrap_or_default();
    let id = inspect.id.clone().unwrap_or_default();
    let short_id = &id[..12.min(id.len())];
    let name = inspect
        .name
        .clone()
        .unwrap_or_default()
        .trim_start_matches('/')
        .to_owned();
    let root = |s: &str| {
        let mut out = s.to_owned();
        if let Some(at) = out.find(&format!("/{project}/")) {
            out = format!("ROOT{}", &out[at + project.len() + 1..]);
        }
        for (key, value) in vars {
            if *key == "WEB_PORT" || *key == "UNIQUE" {
                out = out.replace(value.as_str(), key);
            }
        }
        out
    };
    let show = |v: &dyn std::fmt::Debug| root(&format!("{v:?}"));
    let opt_num = |n: Option<i64>| match n {
        None | Some(0) => "none".to_owned(),
        Some(n) => n.to_string(),
    };

    let mut f = BTreeMap::new();
    let state = inspect
        .state
        .as_ref()
        .and_then(|s| s.status)
        .map(|s| s.to_string())
        .unwrap_or_default();
    f.insert("state", state);
    let image = config.image.clone().unwrap_or_default();
    let built = image.starts_with(project);
    f.insert(
        "image",
        if built {
            "(built from the fixture)".to_owned()
        } else {
            image
        },
    );
    f.insert(
        "same image as",
        show(&sharing.iter().filter(|s| *s != service).collect::<Vec<_>>()),
    );
    // One field per variable, so that a difference names the variable.
    let mut env = BTreeMap::new();
    for entry in config.env.clone().unwrap_or_default() {
        let (key, value) = match entry.split_once('=') {
            Some((k, v)) => (k.to_owned(), show(&v)),
            None => (entry.clone(), "(listed without a value)".to_owned()),
        };
        env.insert(format!("env {key}"), value);
    }
    f.insert("command", show(&config.cmd));
    f.insert("entrypoint", show(&config.entrypoint));
    f.insert("user", show(&config.user.clone().unwrap_or_default()));
    f.insert(
        "working_dir",
        show(&config.working_dir.clone().unwrap_or_default()),
    );
    let labels: BTreeMap<String, String> = config
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("com.docker.compose.") && !k.starts_with("deploy."))
        .collect();
    f.insert("labels", show(&labels));
    let health = config.healthcheck.clone().map(|h| {
        format!(
            "test {:?}, interval {}, timeout {}, retries {}, start_period {}",
            h.test.unwrap_or_default(),
            opt_num(h.interval),
            opt_num(h.timeout),
            opt_num(h.retries),
            opt_num(h.start_period)
        )
    });
    f.insert("healthcheck", health.unwrap_or_else(|| "none".to_owned()));
    f.insert("stop_timeout", opt_num(config.stop_timeout));
    f.insert("stop_signal", show(&config.stop_signal));
    let mut exposed = config.exposed_ports.clone().unwrap_or_default();
    exposed.sort();
    f.insert("exposed ports", show(&exposed));
    let hostname = config.hostname.clone().unwrap_or_default();
    // A container in another's network namespace has that one's hostname: its id.
    let joined = (host.network_mode.as_deref()).is_some_and(|m| m.starts_with("container:"));
    f.insert(
        "hostname",
        if hostname == short_id {
            "(container id)".to_owned()
        } else if joined && hostname.len() == 12 {
            "(the joined container's id)".to_owned()
        } else {
            hostname
        },
    );
    f.insert("domainname", show(&config.domainname));

    let mut mounts: Vec<String> = inspect
        .mounts
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let typ = m.typ.clone().unwrap_or_default();
            let source = match typ.as_str() {
                "volume" => match m.name.as_deref() {
                    Some(n) if is_anonymous(n) => "(anonymous)".to_owned(),
                    Some(n) => n.to_owned(),
                    None => String::new(),
                },
                _ => m.source.clone().unwrap_or_default(),
            };
            let rw = if m.rw.unwrap_or(true) { "rw" } else { "ro" };
            format!(
                "{typ} {source} -> {} {rw}",
                m.destination.clone().unwrap_or_default()
            )
        })
        .collect();
    mounts.sort_by_key(|m| m.split(" -> ").nth(1).unwrap_or_default().to_owned());
    f.insert("mounts", show(&mounts));
    let mut tmpfs: Vec<(String, String)> =
        host.tmpfs.clone().unwrap_or_default().into_iter().collect();
    tmpfs.sort();
    f.insert("tmpfs", show(&tmpfs));

    let networks: BTreeMap<String, Vec<String>> = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(network, endpoint)| {
            let mut aliases: Vec<String> = endpoint
                .aliases
                .unwrap_or_default()
                .into_iter()
                .filter(|a| a != short_id && *a != name)
                .collect();
            aliases.sort();
            aliases.dedup();
            (network, aliases)
        })
        .collect();
    f.insert("network aliases", show(&networks));
    // The engine's own addresses (`02:42:` and the IP) differ from run to run; a chosen one
    // must be the same.
    let macs: BTreeMap<String, String> = (inspect.network_settings.as_ref())
        .and_then(|n| n.networks.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(network, endpoint)| Some((network, endpoint.mac_address?)))
        .map(|(network, mac)| match mac.starts_with("02:42:") {
            true => (network, "(the engine's)".to_owned()),
            false => (network, mac),
        })
        .collect();
    f.insert("mac addresses", show(&macs));

    let mut ports: Vec<String> = host
        .port_bindings
        .clone()
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(port, bindings)| {
            bindings.unwrap_or_default().into_iter().map(move |b| {
                format!(
                    "{port} -> {}:{}",
                    b.host_ip.unwrap_or_default(),
                    b.host_port.unwrap_or_default()
                )
            })
        })
        .collect();
    ports.sort();
    f.insert("ports", show(&ports));

    let restart = host.restart_policy.clone().unwrap_or_default();
    let restart_name = restart.name.map(|n| n.to_string()).unwrap_or_default();
    let restart_name = if restart_name.is_empty() {
        "no".to_owned()
    } else {
        restart_name
    };
    f.insert(
        "restart",
        match restart.maximum_retry_count {
            Some(n) if n > 0 => format!("{restart_name}:{n}"),
            _ => restart_name,
        },
    );
    f.insert("memory", opt_num(host.memory));
    f.insert("memory_reservation", opt_num(host.memory_reservation));
    f.insert("nano_cpus", opt_num(host.nano_cpus));
    f.insert("cpu_quota", opt_num(host.cpu_quota));
    f.insert("cpu_shares", opt_num(host.cpu_shares));
    f.insert("pids_limit", opt_num(host.pids_limit));
    f.insert("shm_size", opt_num(host.shm_size));
    f.insert("oom_score_adj", opt_num(host.oom_score_adj));
    f.insert("runtime", show(&host.runtime));
    f.insert("stdin_open", show(&config.open_stdin));
    f.insert("tty", show(&config.tty));
    f.insert("group_add", show(&host.group_add));
    f.insert("cpuset", show(&host.cpuset_cpus));
    f.insert("memory_swap", opt_num(host.memory_swap));
    f.insert("memory_swappiness", opt_num(host.memory_swappiness));
    f.insert("init", show(&host.init.unwrap_or(false)));
    f.insert("read_only", show(&host.readonly_rootfs.unwrap_or(false)));
    let mut ulimits: Vec<String> = host
        .ulimits
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|u| {
            format!(
                "{}={}:{}",
                u.name.unwrap_or_default(),
                u.soft.unwrap_or_default(),
                u.hard.unwrap_or_default()
            )
        })
        .collect();
    ulimits.sort();
    f.insert("ulimits", show(&ulimits));
    f.insert(
        "log driver",
        show(
            &host
                .log_config
                .clone()
                .and_then(|l| l.typ)
                .unwrap_or_default(),
        ),
    );
    f.into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(env)
        .collect()
}

/// Every difference between the two runs that no allowance covers, one line each, plus
/// allowances this case lists but no longer needs.
fn compare(case: &Case, composed: &Observed, deployed: &Observed) -> Vec<String> {
    let mut report = Vec::new();
    let mut used = vec![false; case.allow.len()];
    let services: BTreeSet<&String> = composed.keys().chain(deployed.keys()).collect();
    for service in services {
        let (Some(c), Some(d)) = (composed.get(service), deployed.get(service)) else {
            let only = if composed.contains_key(service) {
                "docker-compose"
            } else {
                "deploy"
            };
            report.push(format!("  service `{service}` runs under {only} only"));
            continue;
        };
        let absent = "(absent)".to_owned();
        let fields: BTreeSet<&String> = c.keys().chain(d.keys()).collect();
        for field in fields {
            let compose_value = c.get(field).unwrap_or(&absent);
            let deploy_value = d.get(field).unwrap_or(&absent);
            if compose_value == deploy_value {
                continue;
            }
            let matches = |a: &Allow| {
                (a.service == "*" || a.service == service.as_str())
                    && a.field == field.as_str()
                    && a.compose == compose_value
                    && a.deploy == deploy_value
            };
            if EVERY_CASE.iter().any(matches) {
                continue;
            }
            if let Some(i) = case.allow.iter().position(matches) {
                used[i] = true;
                continue;
            }
            report.push(format!(
                "  {service}.{field}:\n    docker-compose: {compose_value}\n    deploy:         {deploy_value}"
            ));
        }
    }
    for (a, used) in case.allow.iter().zip(used) {
        if !used {
            report.push(format!(
                "  allowance for {}.{} is not needed any more: remove it (and its README entry if no case needs it)",
                a.service, a.field
            ));
        }
    }
    report
}
