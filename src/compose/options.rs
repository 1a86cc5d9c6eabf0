//! Container settings that go from the compose file to the engine as they are: each is
//! described once, in the table at the end of this file, with its compose key, its validated
//! type, how it is read, where it goes in the Engine API's create body, how `deploy config`
//! writes it back, and how it enters the config hash.
//!
//! Adding such a key is one entry here (plus its tests). Keys whose meaning reaches further
//! (ports, volumes, networks, build, healthcheck, …) are modelled in `spec.rs`.
//!
//! The config hash decides whether a running container is kept, so each entry says how it
//! enters it, and a golden test (`plan/golden.rs`) pins the hashes of every fixture. A new
//! key enters the hash only when it is set (`when_set`): containers that do not use it keep
//! their hash, and keep running across the upgrade.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use serde_json::value::RawValue;
use serde_yaml::{Mapping, Value};

use super::ComposeError;
use super::raw::{self, Flag, ListOrMap, Scalar, StringOr, StringOrList};
use super::spec::{Logging, Resources, Ulimit};
use super::{bytes, duration};

/// Reads keys out of one service's mapping, leaving the others for the serde mirror.
pub(crate) struct Taker<'a> {
    map: &'a mut Mapping,
    /// `services.web`.
    at: &'a str,
    /// Where keys that no field takes are collected, to be reported together.
    unknown: &'a mut Vec<String>,
}

impl<'a> Taker<'a> {
    pub(crate) fn new(map: &'a mut Mapping, at: &'a str, unknown: &'a mut Vec<String>) -> Self {
        Self { map, at, unknown }
    }

    /// Removes `key` and reads it as `R`; an error names its key path.
    fn take<R: DeserializeOwned>(&mut self, key: &str) -> Result<Option<R>, ComposeError> {
        let Some(value) = self.map.remove(key) else {
            return Ok(None);
        };
        super::typed_as(value, &format!("{}.{key}", self.at), self.unknown).map(Some)
    }

    /// An error at `key` of this service.
    fn error(&self, key: &str, message: impl Into<String>) -> ComposeError {
        ComposeError::at(format!("{}.{key}", self.at), message)
    }
}

/// Where settings go in the Engine API's create body: (dotted path, value).
pub(crate) type Engine = Vec<(&'static str, serde_json::Value)>;

/// The fields a setting adds to the config hash, already serialized, in order.
pub(crate) type Hash = Vec<(&'static str, Box<RawValue>)>;

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn raw_json(value: &impl Serialize) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("plain data always serializes")
}

/// Declares `Options`, one field per entry, and everything done with them.
macro_rules! options {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident: $ty:ty {
            read: $read:expr,
            engine: $engine:expr,
            render: $render:expr,
            hash: $hash:expr $(,)?
        }
    )*) => {
        /// The settings of this table, validated. Serialized (in the `Spec` dumps of the
        /// fixture tests) with only what is set, so a new entry changes no dump.
        #[derive(Clone, Debug, Default, PartialEq, Serialize)]
        pub(crate) struct Options {
            $(
                $(#[doc = $doc])*
                #[serde(skip_serializing_if = "is_default")]
                pub(crate) $field: $ty,
            )*
        }

        impl Options {
            /// Takes every key of the table out of a service's mapping and validates it.
            pub(crate) fn take(taker: &mut Taker<'_>) -> Result<Self, ComposeError> {
                Ok(Self { $( $field: ($read)(&mut *taker)?, )* })
            }

            /// The settings as parts of the create body.
            pub(crate) fn engine(&self) -> Engine {
                let mut out = Engine::new();
                $( ($engine)(&self.$field, &mut out); )*
                out
            }

            /// The settings as compose keys, for `deploy config`.
            pub(crate) fn render(&self, out: &mut Mapping) {
                $( ($render)(&self.$field, out); )*
            }

            /// The settings' part of the config hash.
            pub(crate) fn hash(&self) -> Hash {
                let mut out = Hash::new();
                $( ($hash)(&self.$field, &mut out); )*
                out
            }
        }
    };
}

impl Options {
    /// The services these settings join, each with the key that says so: the namespace of
    /// `service:NAME` in `network_mode`, `pid` or `ipc`, and the volumes of a `volumes_from`
    /// entry (`container:NAME` joins no service; the policy refuses it).
    pub(crate) fn joined_services(&self) -> Vec<(String, String)> {
        let namespaces = [
            ("network_mode", &self.network_mode),
            ("pid", &self.pid),
            ("ipc", &self.ipc),
        ]
        .into_iter()
        .filter_map(|(key, v)| Some((key.to_owned(), v.as_deref()?.strip_prefix("service:")?)));
        let volumes = (self.volumes_from.iter().enumerate())
            .filter(|(_, v)| !v.starts_with("container:"))
            .map(|(i, v)| {
                (
                    format!("volumes_from[{i}]"),
                    v.split(':').next().unwrap_or(v),
                )
            });
        namespaces
            .chain(volumes)
            .map(|(key, service)| (key, service.to_owned()))
            .collect()
    }
}

// ---- reading ----

/// A key read as `R` and converted by `convert`; absent gives the default.
fn key<R, T, F>(
    name: &'static str,
    convert: F,
) -> impl Fn(&mut Taker<'_>) -> Result<T, ComposeError>
where
    R: DeserializeOwned,
    T: Default,
    F: Fn(R) -> Result<T, String>,
{
    move |taker| match taker.take::<R>(name)? {
        None => Ok(T::default()),
        Some(raw) => convert(raw).map_err(|m| taker.error(name, m)),
    }
}

fn text(s: String) -> Result<Option<String>, String> {
    Ok(Some(s))
}

fn flag(f: Flag) -> Result<bool, String> {
    Ok(f.0)
}

fn some_flag(f: Flag) -> Result<Option<bool>, String> {
    Ok(Some(f.0))
}

fn strings(v: Vec<String>) -> Result<Vec<String>, String> {
    Ok(v)
}

fn string_or_list(v: StringOrList<String>) -> Result<Vec<String>, String> {
    Ok(match v {
        StringOrList::Str(s) => vec![s],
        StringOrList::List(items) => items,
    })
}

fn capabilities(v: Vec<String>) -> Result<Vec<String>, String> {
    Ok(v.iter().map(|c| capability(c)).collect())
}

/// Docker accepts `net_admin`, `NET_ADMIN` and `CAP_NET_ADMIN` alike; one spelling lets the
/// policy compare them.
pub(crate) fn capability(c: &str) -> String {
    let upper = c.trim().to_ascii_uppercase();
    upper
        .strip_prefix("CAP_")
        .map(str::to_owned)
        .unwrap_or(upper)
}

// ---- the engine ----

/// Sets `path` in the create body to the setting's value, when `value` gives one.
fn engine_at<T, F>(path: &'static str, value: F) -> impl Fn(&T, &mut Engine)
where
    F: Fn(&T) -> Option<serde_json::Value>,
{
    move |v, out| {
        if let Some(json) = value(v) {
            out.push((path, json));
        }
    }
}

fn json_some<T: Serialize>(v: &Option<T>) -> Option<serde_json::Value> {
    v.as_ref().map(|v| json!(v))
}

fn json_non_empty<T: Serialize>(v: &Vec<T>) -> Option<serde_json::Value> {
    (!v.is_empty()).then(|| json!(v))
}

fn json_map<V: Serialize>(v: &BTreeMap<String, V>) -> Option<serde_json::Value> {
    (!v.is_empty()).then(|| json!(v))
}

// ---- `deploy config` ----

/// Writes `key` when `value` gives something to write.
fn render_as<T, F>(name: &'static str, value: F) -> impl Fn(&T, &mut Mapping)
where
    F: Fn(&T) -> Option<Value>,
{
    move |v, out| {
        if let Some(yaml) = value(v) {
            out.insert(Value::from(name), yaml);
        }
    }
}

fn yaml<T: Serialize>(v: &T) -> Value {
    serde_yaml::to_value(v).expect("plain data always serializes")
}

fn yaml_some<T: Serialize>(v: &Option<T>) -> Option<Value> {
    v.as_ref().map(yaml)
}

fn yaml_non_empty<T: Serialize>(v: &Vec<T>) -> Option<Value> {
    (!v.is_empty()).then(|| yaml(v))
}

fn yaml_map<V: Serialize>(v: &BTreeMap<String, V>) -> Option<Value> {
    (!v.is_empty()).then(|| yaml(v))
}

fn yaml_true(v: &bool) -> Option<Value> {
    v.then_some(Value::Bool(true))
}

// ---- the config hash ----

/// Enters the hash under `name` as `encode` gives it, always: how the settings of the
/// first hash version enter it, so that the hashes of running containers stay the same.
fn hash_always<T, E, F>(name: &'static str, encode: F) -> impl Fn(&T, &mut Hash)
where
    E: Serialize,
    F: Fn(&T) -> E,
{
    move |v, out| out.push((name, raw_json(&encode(v))))
}

/// Enters the hash only when set: how every key added since enters it, so that adding a key
/// changes no running container's hash.
fn hash_when_set<T: Serialize + Default + PartialEq>(name: &'static str) -> impl Fn(&T, &mut Hash) {
    move |v, out| {
        if *v != T::default() {
            out.push((name, raw_json(v)));
        }
    }
}

fn same<T: Clone>(v: &T) -> T {
    v.clone()
}

// ---- the settings that need more than a line ----

/// `host:ip` (or `host=ip`) entries, or a mapping of host to address, as `host:ip`.
pub(crate) fn extra_hosts(raw: ListOrMap) -> Result<Vec<String>, String> {
    let pairs: Vec<(String, String)> = match raw {
        ListOrMap::List(items) => items
            .iter()
            .map(|Scalar(s)| {
                s.split_once('=')
                    .or_else(|| s.split_once(':'))
                    .map(|(h, ip)| (h.to_owned(), ip.to_owned()))
                    .ok_or_else(|| format!("`{s}` is not `host:address`"))
            })
            .collect::<Result<_, _>>()?,
        ListOrMap::Map(map) => map
            .iter()
            .map(|(h, ip)| match ip {
                Some(Scalar(ip)) => Ok((h.clone(), ip.clone())),
                None => Err(format!("`{h}` has no address")),
            })
            .collect::<Result<_, _>>()?,
    };
    pairs
        .into_iter()
        .map(|(host, ip)| {
            // `[::1]` is how IPv6 is written next to a `:`; the API wants it bare.
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            if ip != "host-gateway" && ip.parse::<std::net::IpAddr>().is_err() {
                return Err(format!(
                    "`{ip}` is not an IP address (or `host-gateway`) for `{host}`"
                ));
            }
            Ok(format!("{host}:{ip}"))
        })
        .collect()
}

fn sysctls(raw: ListOrMap) -> Result<BTreeMap<String, String>, String> {
    raw.entries()
        .into_iter()
        .map(|(k, v)| match v {
            Some(v) => Ok((k, v)),
            None => Err(format!("`{k}` has no value")),
        })
        .collect()
}

/// `tmpfs:` entries: container path → mount options (`size=64m`, or empty).
fn tmpfs(raw: StringOrList<String>) -> Result<BTreeMap<String, String>, String> {
    let entries = match raw {
        StringOrList::Str(s) => vec![(None, s)],
        StringOrList::List(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, s)| (Some(i), s))
            .collect(),
    };
    let mut out = BTreeMap::new();
    for (i, entry) in entries {
        let (target, opts) = entry.split_once(':').unwrap_or((&entry, ""));
        if !target.starts_with('/') {
            let at = i.map(|i| format!("[{i}]: ")).unwrap_or_default();
            return Err(format!(
                "{at}the container path `{target}` must be absolute (start with `/`)"
            ));
        }
        let target = super::mounts::normalize(std::path::Path::new(target))
            .to_string_lossy()
            .into_owned();
        out.insert(target, opts.to_owned());
    }
    Ok(out)
}

fn read_ulimits(taker: &mut Taker<'_>) -> Result<BTreeMap<String, Ulimit>, ComposeError> {
    let raw: BTreeMap<String, StringOr<raw::Ulimit>> = taker.take("ulimits")?.unwrap_or_default();
    let number = |key: &str, s: &str| {
        s.trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= -1)
            .ok_or_else(|| {
                taker.error(
                    key,
                    format!("`{s}` is not a limit (a whole number, or -1 for unlimited)"),
                )
            })
    };
    let mut out = BTreeMap::new();
    for (name, value) in raw {
        let key = format!("ulimits.{name}");
        let limit = match value {
            StringOr::Short(s) => {
                let n = number(&key, &s)?;
                Ulimit { soft: n, hard: n }
            }
            StringOr::Long(l) => Ulimit {
                soft: number(&format!("{key}.soft"), &l.soft.0)?,
                hard: number(&format!("{key}.hard"), &l.hard.0)?,
            },
        };
        if limit.hard != -1 && (limit.soft == -1 || limit.soft > limit.hard) {
            return Err(taker.error(&key, "the soft limit is above the hard limit"));
        }
        out.insert(name, limit);
    }
    Ok(out)
}

fn logging(raw: raw::Logging) -> Result<Option<Logging>, String> {
    Ok(Some(Logging {
        driver: raw.driver,
        options: raw
            .options
            .into_iter()
            .map(|(k, v)| (k, v.map(|s| s.0).unwrap_or_default()))
            .collect(),
    }))
}

/// `deploy.resources` and the older service-level keys (`cpus`, `mem_limit`,
/// `mem_reservation`, `pids_limit`). Both may be written; if they disagree, it is an error
/// rather than a guess.
fn read_resources(taker: &mut Taker<'_>) -> Result<Resources, ComposeError> {
    let deploy: raw::Deploy = taker.take("deploy")?.unwrap_or_default();
    let resources = deploy.resources.unwrap_or_default();
    let limits = resources.limits.unwrap_or_default();
    let reservations = resources.reservations.unwrap_or_default();
    let cpus_of = |s: &str| {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|c| c.is_finite() && *c > 0.0)
            .ok_or_else(|| format!("`{s}` is not a number of CPUs (like `0.5` or `2`)"))
    };
    let pids_of = |s: &str| {
        s.trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n == -1 || *n > 0)
            .ok_or_else(|| {
                format!("`{s}` is not a process limit (a positive number, or -1 for unlimited)")
            })
    };
    let mut old = |key: &'static str| taker.take::<Scalar>(key);
    let (cpus, mem_limit) = (old("cpus")?, old("mem_limit")?);
    let (mem_reservation, pids_limit) = (old("mem_reservation")?, old("pids_limit")?);
    let at = taker.at;
    Ok(Resources {
        cpus: either(
            at,
            (limits.cpus, "deploy.resources.limits.cpus"),
            (cpus, "cpus"),
            cpus_of,
        )?,
        memory: either(
            at,
            (limits.memory, "deploy.resources.limits.memory"),
            (mem_limit, "mem_limit"),
            bytes::parse,
        )?,
        memory_reservation: either(
            at,
            (reservations.memory, "deploy.resources.reservations.memory"),
            (mem_reservation, "mem_reservation"),
            bytes::parse,
        )?,
        pids: either(
            at,
            (limits.pids, "deploy.resources.limits.pids"),
            (pids_limit, "pids_limit"),
            pids_of,
        )?,
    })
}

/// One setting written in its current spelling (`new`) or its older one (`old`).
fn either<T: PartialEq>(
    at: &str,
    (new, new_key): (Option<Scalar>, &str),
    (old, old_key): (Option<Scalar>, &str),
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ComposeError> {
    let err = |key: &str, m: String| ComposeError::at(format!("{at}.{key}"), m);
    let new = new
        .map(|s| parse(&s.0).map_err(|m| err(new_key, m)))
        .transpose()?;
    let old = old
        .map(|s| parse(&s.0).map_err(|m| err(old_key, m)))
        .transpose()?;
    match (new, old) {
        (Some(n), Some(o)) if n != o => Err(err(
            old_key,
            format!("conflicts with `{new_key}`; keep one of them"),
        )),
        (n, o) => Ok(n.or(o)),
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Billionths of a CPU (`cpus: 0.5` → 500 000 000), as the engine wants them.
fn nano_cpus(cpus: f64) -> i64 {
    (cpus * 1e9).round() as i64
}

fn engine_resources(r: &Resources, out: &mut Engine) {
    let limits = [
        ("HostConfig.NanoCpus", r.cpus.map(nano_cpus)),
        ("HostConfig.Memory", r.memory.map(saturating_i64)),
        (
            "HostConfig.MemoryReservation",
            r.memory_reservation.map(saturating_i64),
        ),
        ("HostConfig.PidsLimit", r.pids),
    ];
    for (path, value) in limits {
        if let Some(v) = value {
            out.push((path, json!(v)));
        }
    }
}

/// `mem_limit`, `cpus`, … are printed in their `deploy.resources` spelling, the one the
/// Compose Specification keeps.
fn render_resources(r: &Resources, out: &mut Mapping) {
    let mut limits = Mapping::new();
    if let Some(cpus) = r.cpus {
        limits.insert("cpus".into(), yaml(&cpus));
    }
    if let Some(memory) = r.memory {
        limits.insert("memory".into(), bytes::format(memory).into());
    }
    if let Some(pids) = r.pids {
        limits.insert("pids".into(), yaml(&pids));
    }
    let mut resources = Mapping::new();
    if !limits.is_empty() {
        resources.insert("limits".into(), limits.into());
    }
    if let Some(m) = r.memory_reservation {
        let mut reservations = Mapping::new();
        reservations.insert("memory".into(), bytes::format(m).into());
        resources.insert("reservations".into(), reservations.into());
    }
    if !resources.is_empty() {
        let mut deploy = Mapping::new();
        deploy.insert("resources".into(), resources.into());
        out.insert("deploy".into(), deploy.into());
    }
}

/// The hash's encoding of the resources, in the engine's units, field order kept.
#[derive(Serialize)]
struct HashedResources {
    nano_cpus: Option<i64>,
    memory: Option<i64>,
    memory_reservation: Option<i64>,
    pids: Option<i64>,
}

fn hash_resources(r: &Resources) -> HashedResources {
    HashedResources {
        nano_cpus: r.cpus.map(nano_cpus),
        memory: r.memory.map(saturating_i64),
        memory_reservation: r.memory_reservation.map(saturating_i64),
        pids: r.pids,
    }
}

/// `/dev/x[:/dev/y[:rwm]]` as docker-compose writes devices, as the engine's mapping.
fn device(d: &str) -> serde_json::Value {
    let mut parts = d.split(':');
    let host = parts.next().unwrap_or_default();
    let container = parts.next().unwrap_or(host);
    let perms = parts.next().unwrap_or("rwm");
    json!({"PathOnHost": host, "PathInContainer": container, "CgroupPermissions": perms})
}

/// `0-3,6`: CPU numbers and ranges, as the kernel's cpuset takes them.
fn cpu_list(s: &str) -> Result<String, String> {
    let s = s.trim();
    let number = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    let valid = !s.is_empty()
        && s.split(',').all(|part| match part.split_once('-') {
            Some((a, b)) => number(a) && number(b),
            None => number(part),
        });
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!("`{s}` is not a list of CPUs (like `0-3` or `0,2`)"))
    }
}

/// `02:42:ac:11:00:02`: six octets in hex, split by `:` or `-`, as the engine parses a MAC.
/// A multicast address (lowest bit of the first octet set) cannot be a container's.
fn mac_address(s: &str) -> Result<String, String> {
    let octets: Vec<&str> = s.split([':', '-']).collect();
    let hex = |o: &&str| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit());
    let one_separator = !(s.contains(':') && s.contains('-'));
    if octets.len() != 6 || !octets.iter().all(hex) || !one_separator {
        return Err(format!(
            "`{s}` is not a MAC address (six hex octets, like `02:42:ac:11:00:02`)"
        ));
    }
    if u8::from_str_radix(octets[0], 16).is_ok_and(|first| first & 1 == 1) {
        return Err(format!(
            "`{s}` is a multicast address; a container needs a unicast one (an even first octet, like `02`)"
        ));
    }
    Ok(s.to_owned())
}

/// `linux/amd64`, `linux/arm64/v8`: an OCI platform as the engine reads it.
pub(crate) fn platform(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split('/').collect();
    let word = |p: &str| {
        !p.is_empty()
            && (p.bytes()).all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if parts.len() <= 3 && parts.iter().all(|p| word(p)) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a platform (`os/arch`, like `linux/amd64`)"
        ))
    }
}

/// One `volumes_from:` entry: `SERVICE`, `SERVICE:ro|rw`, `container:NAME[:ro|rw]`.
fn volumes_from(entry: String) -> Result<String, String> {
    let rest = entry.strip_prefix("container:").unwrap_or(&entry);
    let (name, mode) = match rest.split_once(':') {
        Some((name, mode)) => (name, Some(mode)),
        None => (rest, None),
    };
    if name.is_empty() || mode.is_some_and(|m| m != "ro" && m != "rw") {
        return Err(format!(
            "`{entry}` is not `SERVICE`, `SERVICE:ro`, `SERVICE:rw` or `container:NAME[:ro|rw]`"
        ));
    }
    Ok(entry)
}

/// One `external_links:` entry: `NAME` or `NAME:ALIAS`.
fn external_link(entry: String) -> Result<String, String> {
    match entry.split_once(':') {
        Some((name, alias)) if !name.is_empty() && !alias.is_empty() && !alias.contains(':') => {
            Ok(entry)
        }
        None if !entry.is_empty() => Ok(entry),
        _ => Err(format!("`{entry}` is not `CONTAINER` or `CONTAINER:ALIAS`")),
    }
}

/// The engine's form of a link: `NAME:ALIAS`, the alias being the name when none is given.
fn link_form(entry: &str) -> String {
    match entry.split_once(':') {
        Some(_) => entry.to_owned(),
        None => format!("{entry}:{entry}"),
    }
}

// ---- the table ----

options! {
    /// `stop_grace_period`: how long a stop waits before it kills.
    stop_grace_period: Option<Duration> {
        read: key("stop_grace_period", |s: Scalar| duration::parse(&s.0).map(Some)),
        engine: engine_at("StopTimeout", |d: &Option<Duration>| d.map(|d| json!(d.as_secs()))),
        render: render_as("stop_grace_period", |d: &Option<Duration>| d.map(|d| duration::format(d).into())),
        hash: hash_always("stop_timeout", same),
    }
    stop_signal: Option<String> {
        read: key("stop_signal", text),
        engine: engine_at("StopSignal", json_some),
        render: render_as("stop_signal", yaml_some),
        hash: hash_always("stop_signal", same),
    }
    privileged: bool {
        read: key("privileged", flag),
        engine: engine_at("HostConfig.Privileged", |p: &bool| Some(json!(p))),
        render: render_as("privileged", yaml_true),
        hash: hash_always("privileged", same),
    }
    /// Capabilities, in one spelling (`NET_ADMIN`).
    cap_add: Vec<String> {
        read: key("cap_add", capabilities),
        engine: engine_at("HostConfig.CapAdd", json_non_empty),
        render: render_as("cap_add", yaml_non_empty),
        hash: hash_always("cap_add", same),
    }
    cap_drop: Vec<String> {
        read: key("cap_drop", capabilities),
        engine: engine_at("HostConfig.CapDrop", json_non_empty),
        render: render_as("cap_drop", yaml_non_empty),
        hash: hash_always("cap_drop", same),
    }
    devices: Vec<String> {
        read: key("devices", strings),
        engine: engine_at("HostConfig.Devices", |d: &Vec<String>| {
            (!d.is_empty()).then(|| d.iter().map(|d| device(d)).collect())
        }),
        render: render_as("devices", yaml_non_empty),
        hash: hash_always("devices", same),
    }
    /// `host`, `none`, `service:NAME`, …; a service with one joins no network.
    network_mode: Option<String> {
        read: key("network_mode", text),
        engine: engine_at("HostConfig.NetworkMode", json_some),
        render: render_as("network_mode", yaml_some),
        hash: hash_always("network_mode", same),
    }
    pid: Option<String> {
        read: key("pid", text),
        engine: engine_at("HostConfig.PidMode", json_some),
        render: render_as("pid", yaml_some),
        hash: hash_always("pid", same),
    }
    ipc: Option<String> {
        read: key("ipc", text),
        engine: engine_at("HostConfig.IpcMode", json_some),
        render: render_as("ipc", yaml_some),
        hash: hash_always("ipc", same),
    }
    userns_mode: Option<String> {
        read: key("userns_mode", text),
        engine: engine_at("HostConfig.UsernsMode", json_some),
        render: render_as("userns_mode", yaml_some),
        hash: hash_always("userns_mode", same),
    }
    security_opt: Vec<String> {
        read: key("security_opt", strings),
        engine: engine_at("HostConfig.SecurityOpt", json_non_empty),
        render: render_as("security_opt", yaml_non_empty),
        hash: hash_always("security_opt", same),
    }
    hostname: Option<String> {
        read: key("hostname", text),
        engine: engine_at("Hostname", json_some),
        render: render_as("hostname", yaml_some),
        hash: hash_always("hostname", same),
    }
    domainname: Option<String> {
        read: key("domainname", text),
        engine: engine_at("Domainname", json_some),
        render: render_as("domainname", yaml_some),
        hash: hash_when_set("domainname"),
    }
    /// The container's MAC address. On engines before API 1.44 it is the container's own
    /// setting, which bollard's model no longer has (see `docker/apply.rs`).
    mac_address: Option<String> {
        read: key("mac_address", |s: String| mac_address(&s).map(Some)),
        engine: engine_at("MacAddress", json_some),
        render: render_as("mac_address", yaml_some),
        hash: hash_when_set("mac_address"),
    }
    dns: Vec<String> {
        read: key("dns", string_or_list),
        engine: engine_at("HostConfig.Dns", json_non_empty),
        render: render_as("dns", yaml_non_empty),
        hash: hash_always("dns", same),
    }
    dns_search: Vec<String> {
        read: key("dns_search", string_or_list),
        engine: engine_at("HostConfig.DnsSearch", json_non_empty),
        render: render_as("dns_search", yaml_non_empty),
        hash: hash_always("dns_search", same),
    }
    /// `host:ip` entries, as the Engine API's `ExtraHosts` takes them.
    extra_hosts: Vec<String> {
        read: key("extra_hosts", extra_hosts),
        engine: engine_at("HostConfig.ExtraHosts", json_non_empty),
        render: render_as("extra_hosts", yaml_non_empty),
        hash: hash_always("extra_hosts", same),
    }
    init: Option<bool> {
        read: key("init", some_flag),
        engine: engine_at("HostConfig.Init", json_some),
        render: render_as("init", yaml_some),
        hash: hash_always("init", same),
    }
    read_only: bool {
        read: key("read_only", flag),
        engine: engine_at("HostConfig.ReadonlyRootfs", |r: &bool| r.then_some(json!(true))),
        render: render_as("read_only", yaml_true),
        hash: hash_always("read_only", same),
    }
    /// Bytes.
    shm_size: Option<u64> {
        read: key("shm_size", |s: Scalar| bytes::parse(&s.0).map(Some)),
        engine: engine_at("HostConfig.ShmSize", |s: &Option<u64>| s.map(|s| json!(saturating_i64(s)))),
        render: render_as("shm_size", |s: &Option<u64>| s.map(|s| bytes::format(s).into())),
        hash: hash_always("shm_size", same),
    }
    /// Container path → mount options (`size=64m`, or empty).
    tmpfs: BTreeMap<String, String> {
        read: key("tmpfs", tmpfs),
        engine: engine_at("HostConfig.Tmpfs", json_map),
        render: render_as("tmpfs", |t: &BTreeMap<String, String>| {
            (!t.is_empty()).then(|| {
                let entries: Vec<String> = t
                    .iter()
                    .map(|(target, opts)| match opts.as_str() {
                        "" => target.clone(),
                        opts => format!("{target}:{opts}"),
                    })
                    .collect();
                yaml(&entries)
            })
        }),
        hash: hash_always("tmpfs", same),
    }
    ulimits: BTreeMap<String, Ulimit> {
        read: read_ulimits,
        engine: engine_at("HostConfig.Ulimits", |u: &BTreeMap<String, Ulimit>| {
            (!u.is_empty()).then(|| {
                u.iter()
                    .map(|(name, l)| json!({"Name": name, "Soft": l.soft, "Hard": l.hard}))
                    .collect()
            })
        }),
        render: render_as("ulimits", yaml_map),
        hash: hash_always("ulimits", |u: &BTreeMap<String, Ulimit>| {
            u.iter()
                .map(|(k, l)| (k.clone(), (l.soft, l.hard)))
                .collect::<BTreeMap<_, _>>()
        }),
    }
    sysctls: BTreeMap<String, String> {
        read: key("sysctls", sysctls),
        engine: engine_at("HostConfig.Sysctls", json_map),
        render: render_as("sysctls", yaml_map),
        hash: hash_always("sysctls", same),
    }
    logging: Option<Logging> {
        read: key("logging", logging),
        engine: engine_at("HostConfig.LogConfig", |l: &Option<Logging>| {
            l.as_ref().map(|l| json!({"Type": l.driver, "Config": l.options}))
        }),
        render: render_as("logging", |l: &Option<Logging>| {
            l.as_ref().map(|l| {
                let mut out = Mapping::new();
                if let Some(driver) = &l.driver {
                    out.insert("driver".into(), driver.as_str().into());
                }
                if !l.options.is_empty() {
                    out.insert("options".into(), yaml(&l.options));
                }
                Value::Mapping(out)
            })
        }),
        hash: hash_always("logging", |l: &Option<Logging>| {
            l.as_ref().map(|l| (l.driver.clone(), l.options.clone()))
        }),
    }
    /// How readily the kernel kills the container when memory runs out: -1000 (never) to
    /// 1000 (first).
    oom_score_adj: Option<i64> {
        read: key("oom_score_adj", |s: Scalar| match s.0.trim().parse::<i64>() {
            Ok(n) if (-1000..=1000).contains(&n) => Ok(Some(n)),
            _ => Err(format!("`{}` is not a whole number from -1000 to 1000", s.0)),
        }),
        engine: engine_at("HostConfig.OomScoreAdj", json_some),
        render: render_as("oom_score_adj", yaml_some),
        hash: hash_when_set("oom_score_adj"),
    }
    /// The OCI runtime the engine runs the container with: `runc`, or one the host's
    /// engine is configured with.
    runtime: Option<String> {
        read: key("runtime", text),
        engine: engine_at("HostConfig.Runtime", json_some),
        render: render_as("runtime", yaml_some),
        hash: hash_when_set("runtime"),
    }
    stdin_open: bool {
        read: key("stdin_open", flag),
        engine: engine_at("OpenStdin", |b: &bool| b.then_some(json!(true))),
        render: render_as("stdin_open", yaml_true),
        hash: hash_when_set("stdin_open"),
    }
    tty: bool {
        read: key("tty", flag),
        engine: engine_at("Tty", |b: &bool| b.then_some(json!(true))),
        render: render_as("tty", yaml_true),
        hash: hash_when_set("tty"),
    }
    /// Extra groups of the container's user, by name or number.
    group_add: Vec<String> {
        read: key("group_add", |v: Vec<Scalar>| Ok(v.into_iter().map(|s| s.0).collect())),
        engine: engine_at("HostConfig.GroupAdd", json_non_empty),
        render: render_as("group_add", yaml_non_empty),
        hash: hash_when_set("group_add"),
    }
    /// The container's CPU weight against the others (the engine's default is 1024).
    cpu_shares: Option<i64> {
        read: key("cpu_shares", |s: Scalar| match s.0.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Some(n)),
            _ => Err(format!("`{}` is not a CPU weight (a whole number, like 512)", s.0)),
        }),
        engine: engine_at("HostConfig.CpuShares", json_some),
        render: render_as("cpu_shares", yaml_some),
        hash: hash_when_set("cpu_shares"),
    }
    /// The CPUs the container may run on: `0-3`, `0,2`.
    cpuset: Option<String> {
        read: key("cpuset", |s: Scalar| cpu_list(&s.0).map(Some)),
        engine: engine_at("HostConfig.CpusetCpus", json_some),
        render: render_as("cpuset", yaml_some),
        hash: hash_when_set("cpuset"),
    }
    /// How readily the kernel swaps the container's memory out: 0 to 100.
    mem_swappiness: Option<i64> {
        read: key("mem_swappiness", |s: Scalar| match s.0.trim().parse::<i64>() {
            Ok(n) if (0..=100).contains(&n) => Ok(Some(n)),
            _ => Err(format!("`{}` is not a whole number from 0 to 100", s.0)),
        }),
        engine: engine_at("HostConfig.MemorySwappiness", json_some),
        render: render_as("mem_swappiness", yaml_some),
        hash: hash_when_set("mem_swappiness"),
    }
    /// Memory plus swap, in bytes; -1 for unlimited swap. Checked against the memory limit
    /// in `normalize`.
    memswap_limit: Option<i64> {
        read: key("memswap_limit", |s: Scalar| match s.0.trim() {
            "-1" => Ok(Some(-1)),
            text => bytes::parse(text).map(|b| Some(saturating_i64(b))),
        }),
        engine: engine_at("HostConfig.MemorySwap", json_some),
        render: render_as("memswap_limit", |m: &Option<i64>| m.map(|m| match u64::try_from(m) {
            Ok(b) => bytes::format(b).into(),
            Err(_) => Value::from(m),
        })),
        hash: hash_when_set("memswap_limit"),
    }
    /// Other services whose volumes the container mounts too: `app` or `app:ro`, as the
    /// compose file writes them (`container:NAME` is read, and refused by the policy). The
    /// plan turns a service into the name of its container.
    volumes_from: Vec<String> {
        read: key("volumes_from", |v: Vec<String>| v.into_iter().map(volumes_from).collect()),
        engine: engine_at("HostConfig.VolumesFrom", json_non_empty),
        render: render_as("volumes_from", yaml_non_empty),
        hash: hash_when_set("volumes_from"),
    }
    /// Containers outside the project this one reaches by another name: `name:alias`.
    external_links: Vec<String> {
        read: key("external_links", |v: Vec<String>| v.into_iter().map(external_link).collect()),
        engine: engine_at("HostConfig.Links", |l: &Vec<String>| {
            (!l.is_empty()).then(|| l.iter().map(|l| json!(link_form(l))).collect())
        }),
        render: render_as("external_links", yaml_non_empty),
        hash: hash_when_set("external_links"),
    }
    /// `os[/arch[/variant]]` the image must be for. Not in the create body: the create, pull
    /// and build requests carry it.
    platform: Option<String> {
        read: key("platform", |s: String| platform(&s).map(Some)),
        engine: |_: &Option<String>, _: &mut Engine| {},
        render: render_as("platform", yaml_some),
        hash: hash_when_set("platform"),
    }
    /// `deploy.resources`, or the older `mem_limit`, `cpus`, … keys.
    resources: Resources {
        read: read_resources,
        engine: engine_resources,
        render: render_resources,
        hash: hash_always("resources", hash_resources),
    }
}
