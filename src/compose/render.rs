//! A `Spec` written back as a compose file, for `deploy config`: merged, interpolated, every
//! entry in its long form, keys sorted, so two runs on the same input print the same text.
//!
//! Secrets appear as the paths of their files, never as values.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_yaml::Value;

use super::duration;
use super::spec::{
    Build, Condition, Config, Dependency, HealthTest, Healthcheck, Hook, Ipam, Mount, Network,
    Ownership, Port, PullPolicy, Release, Restart, Service, ServiceNetwork, Spec, Volume,
};
use crate::ids::ServiceName;

/// The spec as a compose YAML document, with `project` as its top-level `name:`.
pub(crate) fn render(spec: &Spec, project: &str) -> serde_yaml::Value {
    let file = File {
        name: project,
        services: spec
            .services
            .iter()
            .map(|(name, s)| (name.as_str(), service(s, &spec.restart_of(name))))
            .collect(),
        networks: spec
            .networks
            .iter()
            .map(|(k, n)| (k.as_str(), network(n)))
            .collect(),
        volumes: spec
            .volumes
            .iter()
            .map(|(k, v)| (k.as_str(), volume(v)))
            .collect(),
        secrets: spec
            .secrets
            .iter()
            .map(|(k, s)| {
                let file = s.file.to_string_lossy().into_owned();
                (
                    k.as_str(),
                    FileRef {
                        file: Some(file),
                        content: None,
                    },
                )
            })
            .collect(),
        configs: spec
            .configs
            .iter()
            .map(|(k, c)| {
                let r = match c {
                    Config::File(path) => FileRef {
                        file: Some(path.to_string_lossy().into_owned()),
                        content: None,
                    },
                    Config::Content(text) => FileRef {
                        file: None,
                        content: Some(text.clone()),
                    },
                };
                (k.as_str(), r)
            })
            .collect(),
        x_deploy: (spec.release.is_some() || !spec.databases.is_empty()).then_some(OutXDeploy {
            release: spec.release.as_ref(),
            databases: &spec.databases,
        }),
    };
    serde_yaml::to_value(&file).expect("plain data always serializes")
}

/// The document as compose file text, which docker-compose and `deploy` read back as the same
/// configuration: `$` is written `$$`, so nothing is interpolated twice, and strings such as
/// `no`, `on` or `y` are quoted, or YAML 1.1 readers (docker-compose 1.x, PyYAML) would read
/// them as booleans (`restart: no` would be `false`).
pub(crate) fn to_yaml(value: &serde_yaml::Value) -> String {
    let mut value = value.clone();
    escape_dollars(&mut value);
    let text = serde_yaml::to_string(&value).expect("a YAML value always serializes");
    let mut out = String::with_capacity(text.len());
    // Inside a block scalar (`key: |`), lines are text, not YAML: the indent of its key.
    let mut block: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if block.is_some_and(|key| line.trim().is_empty() || indent > key) {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        block = None;
        let (head, scalar) = match line.rsplit_once(": ") {
            Some((head, scalar)) => (format!("{head}: "), scalar),
            None => match line.trim_start().strip_prefix("- ") {
                Some(scalar) => (format!("{}- ", &line[..indent]), scalar),
                None => (String::new(), line),
            },
        };
        if scalar.starts_with('|') || scalar.starts_with('>') {
            block = Some(indent);
        }
        if is_yaml11_bool(scalar) && !head.is_empty() {
            out.push_str(&format!("{head}'{scalar}'\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn escape_dollars(value: &mut serde_yaml::Value) {
    match value {
        Value::String(s) => *s = s.replace('$', "$$"),
        Value::Sequence(items) => items.iter_mut().for_each(escape_dollars),
        Value::Mapping(map) => map.values_mut().for_each(escape_dollars),
        Value::Tagged(tagged) => escape_dollars(&mut tagged.value),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The words YAML 1.1 reads as booleans, except `true` and `false`, which serde_yaml only
/// writes for real booleans and quotes when they are strings.
fn is_yaml11_bool(s: &str) -> bool {
    matches!(
        s,
        "y" | "Y"
            | "yes"
            | "Yes"
            | "YES"
            | "n"
            | "N"
            | "no"
            | "No"
            | "NO"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
            | "True"
            | "TRUE"
            | "False"
            | "FALSE"
    )
}

#[derive(Serialize)]
struct File<'a> {
    name: &'a str,
    services: BTreeMap<&'a str, Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    networks: BTreeMap<&'a str, OutNetwork>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    volumes: BTreeMap<&'a str, OutVolume>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    secrets: BTreeMap<&'a str, FileRef>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    configs: BTreeMap<&'a str, FileRef>,
    #[serde(rename = "x-deploy", skip_serializing_if = "Option::is_none")]
    x_deploy: Option<OutXDeploy<'a>>,
}

#[derive(Serialize)]
struct OutXDeploy<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    release: Option<&'a Release>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    databases: &'a [ServiceName],
}

fn is_false(b: &bool) -> bool {
    !b
}

#[derive(Serialize)]
struct OutService {
    #[serde(skip_serializing_if = "Option::is_none")]
    build: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entrypoint: Option<Vec<String>>,
    /// `env_file` contents already merged in; `null` for a variable listed without a value
    /// that the host env does not set either (the container does not get it).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    environment: BTreeMap<String, Option<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ports: Vec<OutPort>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    expose: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    volumes: Vec<OutMount>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    networks: BTreeMap<String, Option<OutServiceNetwork>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    depends_on: BTreeMap<String, OutDependency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<OutHealthcheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restart: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    secrets: Vec<SourceTarget>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    configs: Vec<SourceTarget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pull_policy: Option<PullPolicy>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    links: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    post_start: Vec<Hook>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pre_stop: Vec<Hook>,
}

/// `build:`; an inline Dockerfile is written back as `dockerfile_inline` alone.
fn build(b: &Build) -> Value {
    let mut out = serde_yaml::to_value(b).expect("plain data always serializes");
    if let (Some(map), Some(_)) = (out.as_mapping_mut(), &b.dockerfile_inline) {
        map.remove("dockerfile");
    }
    out
}

/// A service as a mapping with its keys sorted: the modelled keys, then the plain settings
/// of `options.rs`, each written by its own entry there. `restart` is the policy the
/// container gets, written or not (`Spec::restart_of`).
fn service(s: &Service, restart: &Restart) -> Value {
    let out = OutService {
        build: s.build.as_ref().map(build),
        image: s.image.clone(),
        container_name: s.container_name.clone(),
        command: s.command.clone(),
        entrypoint: s.entrypoint.clone(),
        environment: s.environment.clone(),
        ports: s.ports.iter().map(port).collect(),
        expose: s.expose.clone(),
        volumes: s.volumes.iter().map(mount).collect(),
        networks: s
            .networks
            .iter()
            .map(|(k, n)| (k.clone(), service_network(n)))
            .collect(),
        depends_on: s
            .depends_on
            .iter()
            .map(|(k, d)| (k.as_str().to_owned(), dependency(d)))
            .collect(),
        healthcheck: s.healthcheck.as_ref().map(healthcheck),
        restart: Some(restart_text(restart)),
        secrets: (s.secrets.iter())
            .map(|m| SourceTarget::of(&m.source, &m.target, &m.owner))
            .collect(),
        configs: (s.configs.iter())
            .map(|m| SourceTarget::of(&m.source, &m.target, &m.owner))
            .collect(),
        user: s.user.clone(),
        working_dir: s.working_dir.clone(),
        labels: s.labels.clone(),
        pull_policy: (s.pull_policy != PullPolicy::Missing).then_some(s.pull_policy),
        links: (s.links.iter())
            .map(|l| match l.alias == l.service.as_str() {
                true => l.alias.clone(),
                false => format!("{}:{}", l.service, l.alias),
            })
            .collect(),
        post_start: s.post_start.clone(),
        pre_stop: s.pre_stop.clone(),
    };
    let Value::Mapping(mut map) = serde_yaml::to_value(&out).expect("plain data always serializes")
    else {
        unreachable!("a struct serializes as a mapping")
    };
    s.options.render(&mut map);
    if let Some(n) = s.replicas {
        map.insert("scale".into(), n.into());
    }
    if let Some(order) = s.update_order {
        let order = serde_yaml::to_value(order).expect("plain data always serializes");
        let mut update = serde_yaml::Mapping::new();
        update.insert("order".into(), order);
        let deploy = map
            .entry("deploy".into())
            .or_insert_with(|| Value::Mapping(serde_yaml::Mapping::new()));
        if let Some(deploy) = deploy.as_mapping_mut() {
            deploy.insert("update_config".into(), update.into());
        }
    }
    let mut entries: Vec<(Value, Value)> = map.into_iter().collect();
    entries.sort_by(|(a, _), (b, _)| a.as_str().cmp(&b.as_str()));
    Value::Mapping(entries.into_iter().collect())
}

#[derive(Serialize)]
struct OutPort {
    target: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    published: Option<Published>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host_ip: Option<String>,
    protocol: &'static str,
}

/// A port as a number, a range as `6005-6015`, as the Compose Specification writes them.
#[derive(Serialize)]
#[serde(untagged)]
enum Published {
    Port(u16),
    Range(String),
}

fn port(p: &Port) -> OutPort {
    OutPort {
        target: p.target,
        published: p.published.map(|lo| match p.published_end {
            Some(hi) => Published::Range(format!("{lo}-{hi}")),
            None => Published::Port(lo),
        }),
        host_ip: p.host_ip.clone(),
        protocol: p.protocol.as_str(),
    }
}

#[derive(Serialize)]
struct OutMount {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<String>,
    target: String,
    #[serde(skip_serializing_if = "is_false")]
    read_only: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    bind: Option<OutBind>,
}

#[derive(Serialize)]
struct OutBind {
    propagation: String,
}

fn mount(m: &Mount) -> OutMount {
    let parts = m.parts();
    OutMount {
        kind: parts.kind,
        source: parts.source,
        target: parts.target.to_owned(),
        read_only: parts.read_only,
        bind: parts.propagation.map(|p| OutBind {
            propagation: p.to_owned(),
        }),
    }
}

#[derive(Serialize)]
struct OutServiceNetwork {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipv4_address: Option<String>,
}

/// `null` when the service joins the network with nothing more to say, as compose prints it.
fn service_network(n: &ServiceNetwork) -> Option<OutServiceNetwork> {
    (!n.aliases.is_empty() || n.ipv4_address.is_some()).then(|| OutServiceNetwork {
        aliases: n.aliases.clone(),
        ipv4_address: n.ipv4_address.clone(),
    })
}

#[derive(Serialize)]
struct OutDependency {
    condition: &'static str,
    restart: bool,
    required: bool,
}

fn dependency(d: &Dependency) -> OutDependency {
    OutDependency {
        condition: match d.condition {
            Condition::ServiceStarted => "service_started",
            Condition::ServiceHealthy => "service_healthy",
            Condition::ServiceCompletedSuccessfully => "service_completed_successfully",
        },
        restart: d.restart,
        required: d.required,
    }
}

#[derive(Serialize)]
struct OutHealthcheck {
    #[serde(skip_serializing_if = "Option::is_none")]
    test: Option<Vec<String>>,
    #[serde(skip_serializing_if = "is_false")]
    disable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_period: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    start_interval: Option<String>,
}

fn healthcheck(h: &Healthcheck) -> OutHealthcheck {
    let (test, disable) = match &h.test {
        HealthTest::Disabled => (None, true),
        HealthTest::Inherit => (None, false),
        HealthTest::Cmd(args) => {
            let test = std::iter::once("CMD".to_owned())
                .chain(args.iter().cloned())
                .collect();
            (Some(test), false)
        }
        HealthTest::Shell(script) => (Some(vec!["CMD-SHELL".to_owned(), script.clone()]), false),
    };
    OutHealthcheck {
        test,
        disable,
        interval: h.interval.map(duration::format),
        timeout: h.timeout.map(duration::format),
        retries: h.retries,
        start_period: h.start_period.map(duration::format),
        start_interval: h.start_interval.map(duration::format),
    }
}

fn restart_text(r: &Restart) -> String {
    match r {
        Restart::No => "no".to_owned(),
        Restart::Always => "always".to_owned(),
        Restart::UnlessStopped => "unless-stopped".to_owned(),
        Restart::OnFailure { max_retries: None } => "on-failure".to_owned(),
        Restart::OnFailure {
            max_retries: Some(n),
        } => format!("on-failure:{n}"),
    }
}

#[derive(Serialize)]
struct SourceTarget {
    source: String,
    target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gid: Option<String>,
    /// Octal, as compose files write it (`"0440"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
}

impl SourceTarget {
    fn of(source: &str, target: &str, owner: &Ownership) -> Self {
        Self {
            source: source.to_owned(),
            target: target.to_owned(),
            uid: owner.uid.map(|u| u.to_string()),
            gid: owner.gid.map(|g| g.to_string()),
            mode: owner.mode.map(|m| format!("{m:04o}")),
        }
    }
}

#[derive(Serialize)]
struct OutNetwork {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    external: bool,
    #[serde(skip_serializing_if = "is_false")]
    internal: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    driver_opts: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "is_false")]
    attachable: bool,
    #[serde(skip_serializing_if = "is_false")]
    enable_ipv6: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    ipam: Option<Ipam>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
}

fn network(n: &Network) -> OutNetwork {
    OutNetwork {
        name: n.name.clone(),
        external: n.external,
        internal: n.internal,
        driver: n.driver.clone(),
        driver_opts: n.driver_opts.clone(),
        attachable: n.attachable,
        enable_ipv6: n.enable_ipv6,
        ipam: n.ipam.clone(),
        labels: n.labels.clone(),
    }
}

#[derive(Serialize)]
struct OutVolume {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    external: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    driver_opts: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
}

fn volume(v: &Volume) -> OutVolume {
    OutVolume {
        name: v.name.clone(),
        external: v.external,
        driver: v.driver.clone(),
        driver_opts: v.driver_opts.clone(),
        labels: v.labels.clone(),
    }
}

/// A secret's or config's source: a file path, or (configs only) the text itself.
#[derive(Serialize)]
struct FileRef {
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_are_escaped_as_in_a_compose_file() {
        let value: serde_yaml::Value =
            serde_yaml::from_str("environment: {PRICE: $5, RAW: '${X}'}").unwrap();
        assert_eq!(
            to_yaml(&value),
            "environment:\n  PRICE: $$5\n  RAW: $${X}\n"
        );
    }

    #[test]
    fn yaml11_booleans_stay_strings() {
        let value: serde_yaml::Value = serde_yaml::from_str(
            "restart: 'no'\nflags: ['on', 'off', 'y', ok, true]\nenvironment: {DEBUG: 'yes', REAL: false}\ncontent: \"a\\nno\\n- on\\n\"\n",
        )
        .unwrap();
        let text = to_yaml(&value);
        assert_eq!(
            text,
            "restart: 'no'\nflags:\n- 'on'\n- 'off'\n- 'y'\n- ok\n- true\nenvironment:\n  DEBUG: 'yes'\n  REAL: false\ncontent: |\n  a\n  no\n  - on\n"
        );
        let back: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, value);
    }
}
