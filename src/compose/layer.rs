//! Layering of compose files (`-f a.yml -f b.yml`): later files refine earlier ones.
//!
//! The rules, by key:
//! - mappings merge key by key, recursively; scalars from the later file replace;
//! - a later `null` keeps the earlier value (`volumes: {data:}` only declares);
//! - `!reset` removes the earlier value, `!override` replaces it without merging;
//! - `command`, `entrypoint` and `healthcheck.test` replace as a whole: a command is one value;
//! - `environment`, `labels`, `build.args`, `build.labels` and the `labels`/`driver_opts` of
//!   networks and volumes merge per key, whether written as a list (`K=V`) or a mapping;
//! - a service's `networks` and `depends_on` merge per name, list or mapping form;
//! - `build` merges as a mapping (a string is its `context`);
//! - `ports` merge by container port and protocol, `volumes` by mount target, `secrets` by
//!   target, `devices` by container path, `expose` by port and `dns` by address: a later entry
//!   with the same key replaces the earlier one in place, others are appended;
//! - `configs` merge by target too;
//! - `cap_add`, `cap_drop`, `security_opt`, `env_file`, `dns_search`, `profiles`, `tmpfs`
//!   and `extra_hosts` append without repeating an entry already there;
//! - `logging` merges as a mapping, unless the later file names another driver: options
//!   belong to their driver, so then it replaces;
//! - a single string where a list is allowed (`dns: 1.1.1.1`) counts as a list of one;
//! - every other sequence appends.

use serde_yaml::{Mapping, Value};

use super::tree::{is_tag, key_text};

/// Layers `over` onto `base`, both whole files.
pub(crate) fn merge(base: Value, over: Value) -> Value {
    merge_at(&mut Vec::new(), base, over)
}

#[derive(Clone, Copy)]
enum Rule {
    /// Recurse into mappings, replace scalars, append sequences.
    Default,
    Replace,
    /// Per-key merge of `K=V` lists and mappings.
    KeyValue,
    /// Per-name merge of name lists and mappings.
    Names,
    /// `build:` as a string is shorthand for `{context: …}`.
    Build,
    Keyed(fn(&Value) -> Option<String>),
    AppendUnique,
    /// Options belong to a driver: a different driver brings its own options.
    Logging,
}

fn rule(path: &[String]) -> Rule {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    match path.as_slice() {
        ["services", _, key] => match *key {
            "command" | "entrypoint" => Rule::Replace,
            "environment" | "labels" | "sysctls" | "annotations" => Rule::KeyValue,
            "networks" | "depends_on" => Rule::Names,
            "build" => Rule::Build,
            "ports" => Rule::Keyed(port_key),
            "volumes" => Rule::Keyed(mount_key),
            "secrets" => Rule::Keyed(secret_key),
            "devices" => Rule::Keyed(device_key),
            "expose" => Rule::Keyed(expose_key),
            "configs" => Rule::Keyed(config_key),
            "dns" => Rule::Keyed(scalar_key),
            "cap_add" | "cap_drop" | "security_opt" | "env_file" | "dns_search" | "profiles"
            | "tmpfs" | "extra_hosts" => Rule::AppendUnique,
            "logging" => Rule::Logging,
            _ => Rule::Default,
        },
        ["services", _, "healthcheck", "test"] => Rule::Replace,
        ["services", _, "build", "args" | "labels"] => Rule::KeyValue,
        ["networks" | "volumes", _, "labels" | "driver_opts"] => Rule::KeyValue,
        _ => Rule::Default,
    }
}

fn merge_at(path: &mut Vec<String>, base: Value, over: Value) -> Value {
    if over.is_null() {
        return base;
    }
    if is_tag(&over, "override") || is_tag(&over, "reset") {
        // Resolved after layering, so a single file may use them too.
        return over;
    }
    match rule(path) {
        Rule::Replace => over,
        Rule::KeyValue => match (key_value_map(&base), key_value_map(&over)) {
            (Some(mut b), Some(o)) => {
                for (k, v) in o {
                    b.insert(k, v);
                }
                Value::Mapping(b)
            }
            _ => over,
        },
        Rule::Names => match (names_map(base), names_map(over)) {
            (Value::Mapping(b), Value::Mapping(o)) => merge_mappings(path, b, o),
            (_, o) => o,
        },
        Rule::Build => merge_at_default(path, build_map(base), build_map(over)),
        // A single string (`dns: 1.1.1.1`, `env_file: a.env`) is a list of one.
        Rule::Keyed(key) => match (as_list(base), as_list(over)) {
            (Value::Sequence(b), Value::Sequence(o)) => Value::Sequence(merge_keyed(b, o, key)),
            (_, o) => o,
        },
        Rule::AppendUnique => match (as_list(base), as_list(over)) {
            (Value::Sequence(mut b), Value::Sequence(o)) => {
                for item in o {
                    if !b.contains(&item) {
                        b.push(item);
                    }
                }
                Value::Sequence(b)
            }
            (_, o) => o,
        },
        Rule::Logging => {
            let driver = |v: &Value| v.get("driver").cloned();
            if driver(&over).is_some() && driver(&over) != driver(&base) {
                over
            } else {
                merge_at_default(path, base, over)
            }
        }
        Rule::Default => merge_at_default(path, base, over),
    }
}

fn merge_at_default(path: &mut Vec<String>, base: Value, over: Value) -> Value {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => merge_mappings(path, b, o),
        (Value::Sequence(mut b), Value::Sequence(o)) => {
            b.extend(o);
            Value::Sequence(b)
        }
        (_, o) => o,
    }
}

fn merge_mappings(path: &mut Vec<String>, mut base: Mapping, over: Mapping) -> Value {
    for (k, v) in over {
        if is_tag(&v, "reset") {
            base.shift_remove(&k);
            continue;
        }
        // In place, so the merged file keeps the base file's key order.
        match base.get_mut(&k) {
            Some(slot) => {
                path.push(key_text(&k));
                *slot = merge_at(path, std::mem::take(slot), v);
                path.pop();
            }
            None => {
                base.insert(k, v);
            }
        }
    }
    Value::Mapping(base)
}

/// `[K=V, K2]` or `{K: V}` as one mapping; `None` when it is neither, so the later value
/// simply replaces and validation reports what is wrong with it.
fn key_value_map(v: &Value) -> Option<Mapping> {
    match v {
        Value::Mapping(m) => Some(m.clone()),
        Value::Sequence(items) => {
            let mut m = Mapping::new();
            for item in items {
                let s = item.as_str()?;
                match s.split_once('=') {
                    Some((k, v)) => m.insert(k.into(), v.into()),
                    None => m.insert(s.into(), Value::Null),
                };
            }
            Some(m)
        }
        _ => None,
    }
}

/// A list of names as a mapping of names to empty entries, so that a list in one file and
/// a mapping with options in another merge per name (the options survive).
fn names_map(v: Value) -> Value {
    match v {
        Value::Sequence(items) if items.iter().all(Value::is_string) => Value::Mapping(
            items
                .into_iter()
                .map(|name| (name, Value::Mapping(Mapping::new())))
                .collect(),
        ),
        other => other,
    }
}

fn build_map(v: Value) -> Value {
    match v {
        Value::String(context) => {
            let mut m = Mapping::new();
            m.insert("context".into(), Value::String(context));
            Value::Mapping(m)
        }
        other => other,
    }
}

fn as_list(v: Value) -> Value {
    match v {
        Value::String(_) => Value::Sequence(vec![v]),
        other => other,
    }
}

/// Entries of `over` replace entries of `base` with the same key, in place; the rest of
/// `over` is appended. Entries whose key cannot be read are kept as they are.
fn merge_keyed(
    base: Vec<Value>,
    over: Vec<Value>,
    key: fn(&Value) -> Option<String>,
) -> Vec<Value> {
    let over_keys: Vec<Option<String>> = over.iter().map(key).collect();
    let mut used = vec![false; over.len()];
    let mut out = Vec::with_capacity(base.len() + over.len());
    for item in base {
        let Some(k) = key(&item) else {
            out.push(item);
            continue;
        };
        let mut replaced = false;
        for (i, ok) in over_keys.iter().enumerate() {
            if ok.as_deref() == Some(k.as_str()) {
                replaced = true;
                if !used[i] {
                    used[i] = true;
                    out.push(over[i].clone());
                }
            }
        }
        if !replaced {
            out.push(item);
        }
    }
    for (i, item) in over.into_iter().enumerate() {
        if !used[i] {
            out.push(item);
        }
    }
    out
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn scalar_key(v: &Value) -> Option<String> {
    scalar_text(v)
}

/// `80/tcp` for `"8080:80"`, `"127.0.0.1:8080:80"`, `80` or `{target: 80}`.
fn port_key(v: &Value) -> Option<String> {
    let (spec, protocol) = match v {
        Value::Mapping(m) => (
            scalar_text(m.get("target")?)?,
            m.get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("tcp")
                .to_owned(),
        ),
        other => {
            let s = scalar_text(other)?;
            match s.rsplit_once('/') {
                Some((spec, proto)) => (spec.to_owned(), proto.to_owned()),
                None => (s, "tcp".to_owned()),
            }
        }
    };
    let target = spec.rsplit(':').next()?;
    Some(format!("{target}/{}", protocol.to_ascii_lowercase()))
}

fn expose_key(v: &Value) -> Option<String> {
    let s = scalar_text(v)?;
    Some(if s.contains('/') {
        s
    } else {
        format!("{s}/tcp")
    })
}

/// The container path of `src:target[:mode]`, `target` or `{target: …}`.
fn mount_key(v: &Value) -> Option<String> {
    let target = match v {
        Value::Mapping(m) => m.get("target")?.as_str()?.to_owned(),
        Value::String(s) => {
            let mut parts = s.split(':');
            let first = parts.next()?;
            parts.next().unwrap_or(first).to_owned()
        }
        _ => return None,
    };
    Some(trim_slash(&target))
}

fn device_key(v: &Value) -> Option<String> {
    mount_key(v)
}

fn secret_key(v: &Value) -> Option<String> {
    let target = match v {
        Value::String(s) => s.clone(),
        Value::Mapping(m) => match m.get("target") {
            Some(t) => t.as_str()?.to_owned(),
            None => m.get("source")?.as_str()?.to_owned(),
        },
        _ => return None,
    };
    Some(if target.starts_with('/') {
        trim_slash(&target)
    } else {
        format!("/run/secrets/{}", trim_slash(&target))
    })
}

/// Configs mount at `/<source>` unless given a target.
fn config_key(v: &Value) -> Option<String> {
    let target = match v {
        Value::String(s) => format!("/{s}"),
        Value::Mapping(m) => match m.get("target") {
            Some(t) => t.as_str()?.to_owned(),
            None => format!("/{}", m.get("source")?.as_str()?),
        },
        _ => return None,
    };
    Some(trim_slash(&target))
}

fn trim_slash(s: &str) -> String {
    let t = s.trim_end_matches('/');
    if t.is_empty() {
        s.to_owned()
    } else {
        t.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml::from_str(text).unwrap()
    }

    fn layered(a: &str, b: &str) -> Value {
        merge(yaml(a), yaml(b))
    }

    #[test]
    fn scalars_replace_and_maps_merge() {
        assert_eq!(
            layered(
                "services: {web: {image: a, restart: always}}",
                "services: {web: {image: b}, db: {image: pg}}"
            ),
            yaml("services: {web: {image: b, restart: always}, db: {image: pg}}")
        );
    }

    #[test]
    fn environment_merges_across_forms() {
        assert_eq!(
            layered(
                "services: {web: {environment: [A=1, B=2, C]}}",
                "services: {web: {environment: {B: 3, D: 4}}}"
            ),
            yaml("services: {web: {environment: {A: '1', B: 3, C: null, D: 4}}}")
        );
    }

    #[test]
    fn ports_and_volumes_merge_by_target() {
        assert_eq!(
            layered(
                "services: {web: {ports: ['8080:80', '443:443', '53:53/udp'], volumes: ['./a:/data', 'logs:/logs:ro']}}",
                "services: {web: {ports: ['9090:80', {target: 53, published: 5353, protocol: udp}, '22'], volumes: [{type: volume, source: d, target: /data/}]}}"
            ),
            yaml(
                "services: {web: {ports: ['9090:80', '443:443', {target: 53, published: 5353, protocol: udp}, '22'], volumes: [{type: volume, source: d, target: /data/}, 'logs:/logs:ro']}}"
            )
        );
    }

    #[test]
    fn commands_replace_and_lists_append() {
        assert_eq!(
            layered(
                "services: {web: {command: [a, b], healthcheck: {test: [CMD, x], retries: 3}, cap_add: [A], extra: [1]}}",
                "services: {web: {command: [c], healthcheck: {test: [CMD, y]}, cap_add: [A, B], extra: [2]}}"
            ),
            yaml(
                "services: {web: {command: [c], healthcheck: {test: [CMD, y], retries: 3}, cap_add: [A, B], extra: [1, 2]}}"
            )
        );
    }

    #[test]
    fn names_merge_across_forms() {
        assert_eq!(
            layered(
                "services: {web: {depends_on: {db: {condition: service_healthy}}, networks: [front]}}",
                "services: {web: {depends_on: [db, cache], networks: {back: {aliases: [x]}}}}"
            ),
            yaml(
                "services: {web: {depends_on: {db: {condition: service_healthy}, cache: {}}, networks: {front: {}, back: {aliases: [x]}}}}"
            )
        );
    }

    #[test]
    fn build_string_merges_with_mapping() {
        assert_eq!(
            layered(
                "services: {web: {build: ./app}}",
                "services: {web: {build: {target: prod}}}"
            ),
            yaml("services: {web: {build: {context: ./app, target: prod}}}")
        );
    }
}
