//! The serde mirror of a compose file: every key `deploy` models, and nothing else.
//!
//! A key no struct has a field for is never silently ignored: `typed_as` (in `mod.rs`),
//! the only way these types are read, collects every such key and the load fails naming
//! them all. Values are kept close to how they are written
//! (short forms stay strings); `normalize` turns them into the `Spec`. A service's plain
//! settings (`init`, `dns`, `ulimits`, …) are not here: `options.rs` takes them out of the
//! tree first, each described once in its table; a key with wider meaning is a field here
//! and is read in `normalize`.
//!
//! Values that may come from interpolation (`retries: ${RETRIES}`) arrive as strings, so
//! numbers and booleans also accept their string forms, as docker-compose does.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;

pub(crate) use super::spec::Condition;
use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Deserialize)]
pub(crate) struct Compose {
    /// Obsolete; accepted and ignored, as docker-compose does.
    #[serde(default, rename = "version")]
    pub(crate) _version: Option<Scalar>,
    pub(crate) name: Option<String>,
    pub(crate) services: Option<BTreeMap<String, Option<Service>>>,
    #[serde(default)]
    pub(crate) networks: Option<BTreeMap<String, Option<Network>>>,
    #[serde(default)]
    pub(crate) volumes: Option<BTreeMap<String, Option<Volume>>>,
    #[serde(default)]
    pub(crate) secrets: Option<BTreeMap<String, Option<Secret>>>,
    #[serde(default)]
    pub(crate) configs: Option<BTreeMap<String, Option<Config>>>,
    /// What `deploy` does besides running the services; every other `x-` key is dropped
    /// before typing.
    #[serde(default, rename = "x-deploy")]
    pub(crate) x_deploy: Option<XDeploy>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct XDeploy {
    pub(crate) release: Option<Release>,
    #[serde(default)]
    pub(crate) databases: Vec<String>,
}

/// `x-deploy.release`: the command run once per deploy in a one-off container of the new
/// image of `service`, before anything is switched.
#[derive(Debug, Deserialize)]
pub(crate) struct Release {
    pub(crate) service: String,
    pub(crate) command: StringOrList<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Service {
    pub(crate) build: Option<StringOr<Build>>,
    pub(crate) image: Option<String>,
    pub(crate) container_name: Option<String>,
    pub(crate) command: Option<StringOrList<Scalar>>,
    pub(crate) entrypoint: Option<StringOrList<Scalar>>,
    #[serde(default)]
    pub(crate) environment: ListOrMap,
    pub(crate) env_file: Option<StringOrList<StringOr<EnvFile>>>,
    #[serde(default)]
    pub(crate) ports: Vec<StringOr<Port>>,
    #[serde(default)]
    pub(crate) expose: Vec<Scalar>,
    #[serde(default)]
    pub(crate) volumes: Vec<StringOr<Mount>>,
    pub(crate) networks: Option<NamesOr<ServiceNetwork>>,
    pub(crate) depends_on: Option<NamesOr<Dependency>>,
    pub(crate) healthcheck: Option<Healthcheck>,
    pub(crate) restart: Option<Scalar>,
    pub(crate) pull_policy: Option<String>,
    #[serde(default)]
    pub(crate) secrets: Vec<StringOr<SourceRef>>,
    pub(crate) user: Option<Scalar>,
    pub(crate) working_dir: Option<String>,
    #[serde(default)]
    pub(crate) labels: ListOrMap,
    #[serde(default)]
    pub(crate) profiles: Vec<String>,
    #[serde(default)]
    pub(crate) configs: Vec<StringOr<SourceRef>>,
    #[serde(default)]
    pub(crate) links: Vec<String>,
    #[serde(default)]
    pub(crate) post_start: Vec<Hook>,
    #[serde(default)]
    pub(crate) pre_stop: Vec<Hook>,
    pub(crate) scale: Option<Int<u32>>,
    /// `deploy.restart_policy`, moved here by `take_options`, as are the next three.
    #[serde(rename = "x-from-deploy.restart_policy")]
    pub(crate) restart_policy: Option<RestartPolicy>,
    #[serde(rename = "x-from-deploy.replicas")]
    pub(crate) replicas: Option<Int<u32>>,
    #[serde(rename = "x-from-deploy.update_config")]
    pub(crate) update_config: Option<UpdateConfig>,
    #[serde(rename = "x-from-deploy.mode")]
    pub(crate) mode: Option<String>,
}

/// `deploy.update_config`: of Swarm's rolling update, only the order means something when
/// one host replaces a container; the pacing keys are refused with their path.
#[derive(Debug, Deserialize)]
pub(crate) struct UpdateConfig {
    pub(crate) order: Option<String>,
}

/// A lifecycle hook: a command run in the service's container.
#[derive(Debug, Deserialize)]
pub(crate) struct Hook {
    pub(crate) command: StringOrList<Scalar>,
    pub(crate) user: Option<Scalar>,
    pub(crate) privileged: Option<Flag>,
    pub(crate) working_dir: Option<String>,
    #[serde(default)]
    pub(crate) environment: ListOrMap,
}

/// `deploy.restart_policy`. `delay` and `window` are Swarm's pacing, which the engine's
/// restart policy has no setting for; they are read and left aside, as compose v2 does.
#[derive(Debug, Deserialize)]
pub(crate) struct RestartPolicy {
    pub(crate) condition: Option<String>,
    pub(crate) max_attempts: Option<Int<u32>>,
    #[allow(
        dead_code,
        reason = "read so that it is accepted; the engine has no such setting"
    )]
    pub(crate) delay: Option<Scalar>,
    #[allow(
        dead_code,
        reason = "read so that it is accepted; the engine has no such setting"
    )]
    pub(crate) window: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Ulimit {
    pub(crate) soft: Scalar,
    pub(crate) hard: Scalar,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Logging {
    pub(crate) driver: Option<String>,
    #[serde(default)]
    pub(crate) options: BTreeMap<String, Option<Scalar>>,
}

/// Only `resources` of `deploy:` applies to a single Docker host; the rest is Swarm's.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Deploy {
    pub(crate) resources: Option<DeployResources>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DeployResources {
    pub(crate) limits: Option<Limits>,
    pub(crate) reservations: Option<Reservations>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Limits {
    pub(crate) cpus: Option<Scalar>,
    pub(crate) memory: Option<Scalar>,
    pub(crate) pids: Option<Scalar>,
}

/// CPU and device reservations only mean something to Swarm's scheduler.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Reservations {
    pub(crate) memory: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Config {
    pub(crate) file: Option<String>,
    pub(crate) content: Option<String>,
    /// Read only to refuse it with a reason.
    pub(crate) external: Option<Flag>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Build {
    pub(crate) context: Option<String>,
    pub(crate) dockerfile: Option<String>,
    #[serde(default)]
    pub(crate) args: ListOrMap,
    pub(crate) target: Option<String>,
    #[serde(default)]
    pub(crate) labels: ListOrMap,
    pub(crate) network: Option<String>,
    /// Top-level secrets a `RUN --mount=type=secret` may read (BuildKit only).
    #[serde(default)]
    pub(crate) secrets: Vec<StringOr<SourceRef>>,
    #[serde(default)]
    pub(crate) cache_from: Vec<String>,
    pub(crate) extra_hosts: Option<ListOrMap>,
    /// Read only to refuse it with its key path: no SSH agent is forwarded to a build.
    pub(crate) ssh: Option<serde_yaml::Value>,
    pub(crate) shm_size: Option<Scalar>,
    pub(crate) dockerfile_inline: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct EnvFile {
    pub(crate) path: String,
    pub(crate) required: Option<Flag>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Port {
    pub(crate) target: Int<u16>,
    pub(crate) published: Option<Scalar>,
    pub(crate) host_ip: Option<String>,
    pub(crate) protocol: Option<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum MountType {
    Bind,
    Volume,
    Tmpfs,
    /// Read only to refuse it with its reason.
    Image,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Mount {
    #[serde(rename = "type")]
    pub(crate) kind: MountType,
    pub(crate) source: Option<String>,
    pub(crate) target: String,
    pub(crate) read_only: Option<Flag>,
    pub(crate) bind: Option<BindOptions>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct BindOptions {
    pub(crate) propagation: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ServiceNetwork {
    #[serde(default)]
    pub(crate) aliases: Vec<String>,
    pub(crate) ipv4_address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Dependency {
    pub(crate) condition: Option<Condition>,
    pub(crate) restart: Option<Flag>,
    pub(crate) required: Option<Flag>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Healthcheck {
    pub(crate) test: Option<StringOrList<Scalar>>,
    pub(crate) disable: Option<Flag>,
    pub(crate) interval: Option<Scalar>,
    pub(crate) timeout: Option<Scalar>,
    pub(crate) retries: Option<Int<u32>>,
    pub(crate) start_period: Option<Scalar>,
    pub(crate) start_interval: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
/// The long form of an entry of a service's `secrets:` or `configs:`, or of `build.secrets`.
pub(crate) struct SourceRef {
    pub(crate) source: String,
    pub(crate) target: Option<String>,
    pub(crate) uid: Option<Scalar>,
    pub(crate) gid: Option<Scalar>,
    pub(crate) mode: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Network {
    pub(crate) name: Option<String>,
    pub(crate) external: Option<External>,
    pub(crate) internal: Option<Flag>,
    pub(crate) driver: Option<String>,
    #[serde(default)]
    pub(crate) driver_opts: BTreeMap<String, Scalar>,
    pub(crate) attachable: Option<Flag>,
    pub(crate) enable_ipv6: Option<Flag>,
    pub(crate) ipam: Option<Ipam>,
    #[serde(default)]
    pub(crate) labels: ListOrMap,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Ipam {
    pub(crate) driver: Option<String>,
    #[serde(default)]
    pub(crate) config: Vec<IpamPool>,
    #[serde(default)]
    pub(crate) options: BTreeMap<String, Scalar>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct IpamPool {
    pub(crate) subnet: Option<String>,
    pub(crate) ip_range: Option<String>,
    pub(crate) gateway: Option<String>,
    #[serde(default)]
    pub(crate) aux_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Volume {
    pub(crate) name: Option<String>,
    pub(crate) external: Option<External>,
    pub(crate) driver: Option<String>,
    #[serde(default)]
    pub(crate) driver_opts: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub(crate) labels: ListOrMap,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Secret {
    pub(crate) file: Option<String>,
    /// Read only to refuse it with a reason: Swarm-managed secrets do not exist here.
    pub(crate) external: Option<Flag>,
    /// Read only to refuse it with a reason: secrets never travel through env.
    pub(crate) environment: Option<String>,
}

/// A string, number or boolean, as text. `80`, `"80"` and `true` are all scalars.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Scalar(pub(crate) String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A boolean, also written as a string (`"true"`, `"yes"`, `"off"`) as interpolation yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flag(pub(crate) bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`true` or `false`")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Flag, E> {
                // The spellings compose-go accepts for interpolated booleans.
                match v {
                    "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "y" | "Y" | "on" | "On"
                    | "ON" => Ok(Flag(true)),
                    "false" | "False" | "FALSE" | "no" | "No" | "NO" | "n" | "N" | "off"
                    | "Off" | "OFF" => Ok(Flag(false)),
                    _ => Err(E::custom(format!("`{v}` is not `true` or `false`"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `external: true`, or the older `external: {name: x}`.
#[derive(Debug)]
pub(crate) enum External {
    Flag(Flag),
    Named(String),
}

#[derive(Deserialize)]
struct ExternalName {
    name: String,
}

impl<'de> Deserialize<'de> for External {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = External;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`true`, `false` or `{name: …}`")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<External, E> {
                Ok(External::Flag(Flag(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<External, E> {
                Flag::deserialize(de::value::StrDeserializer::<E>::new(v)).map(External::Flag)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<External, A::Error> {
                ExternalName::deserialize(MapAccessDeserializer::new(map))
                    .map(|n| External::Named(n.name))
            }
        }
        d.deserialize_any(V)
    }
}

/// An unsigned integer, also written as a string of digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Int<T>(pub(crate) T);

impl<'de, T: TryFrom<u64>> Deserialize<'de> for Int<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: TryFrom<u64>> Visitor<'_> for V<T> {
            type Value = Int<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int<T>, E> {
                T::try_from(v)
                    .map(Int)
                    .map_err(|_| E::custom(format!("`{v}` is out of range")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int<T>, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("`{v}` is negative"))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Int<T>, E> {
                match v.trim().parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!("`{v}` is not a whole number"))),
                }
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// The short (string) or long (mapping) syntax of an entry. Numbers count as short, so
/// `ports: [80]` reads like `ports: ["80"]`.
#[derive(Debug)]
pub(crate) enum StringOr<T> {
    Short(String),
    Long(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for StringOr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = StringOr<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a mapping")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StringOr::Short(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(StringOr::Short(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(StringOr::Short(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(StringOr::Long)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// One string or a list (`command: npm start` or `command: [npm, start]`).
#[derive(Debug)]
pub(crate) enum StringOrList<T> {
    Str(String),
    List(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for StringOrList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = StringOrList<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StringOrList::Str(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(SeqAccessDeserializer::new(seq)).map(StringOrList::List)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// `environment`-style values: a list of `KEY=VALUE` (or bare `KEY`) or a mapping whose
/// values may be empty.
#[derive(Debug)]
pub(crate) enum ListOrMap {
    List(Vec<Scalar>),
    Map(BTreeMap<String, Option<Scalar>>),
}

impl Default for ListOrMap {
    fn default() -> Self {
        ListOrMap::Map(BTreeMap::new())
    }
}

impl ListOrMap {
    /// Entries in the order they apply; `None` for a key written without a value.
    pub(crate) fn entries(&self) -> Vec<(String, Option<String>)> {
        match self {
            ListOrMap::List(items) => items
                .iter()
                .map(|Scalar(s)| match s.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (s.clone(), None),
                })
                .collect(),
            ListOrMap::Map(map) => map
                .iter()
                .map(|(k, v)| (k.clone(), v.as_ref().map(|s| s.0.clone())))
                .collect(),
        }
    }
}

impl<'de> Deserialize<'de> for ListOrMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ListOrMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of `KEY=VALUE` strings or a mapping")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ListOrMap, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(ListOrMap::List)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ListOrMap, A::Error> {
                BTreeMap::deserialize(MapAccessDeserializer::new(map)).map(ListOrMap::Map)
            }
            fn visit_unit<E: de::Error>(self) -> Result<ListOrMap, E> {
                Ok(ListOrMap::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// A list of names, or a mapping of names to options (`networks`, `depends_on`).
#[derive(Debug)]
pub(crate) enum NamesOr<T> {
    List(Vec<String>),
    Map(BTreeMap<String, Option<T>>),
}

impl<T: Default> NamesOr<T> {
    /// Every name with its options, defaulted for the list form. The index is the list
    /// position, for error paths.
    pub(crate) fn into_entries(self) -> Vec<(String, Option<usize>, T)> {
        match self {
            NamesOr::List(names) => names
                .into_iter()
                .enumerate()
                .map(|(i, n)| (n, Some(i), T::default()))
                .collect(),
            NamesOr::Map(map) => map
                .into_iter()
                .map(|(n, opts)| (n, None, opts.unwrap_or_default()))
                .collect(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NamesOr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = NamesOr<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of names or a mapping")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(NamesOr::List)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                BTreeMap::deserialize(MapAccessDeserializer::new(map)).map(NamesOr::Map)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}
