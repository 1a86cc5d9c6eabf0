//! The untyped YAML tree of one compose file: parsing, merge keys, tags and `x-` extensions.
//!
//! Everything here happens before interpolation and typing, because the Compose
//! Specification interpolates the raw tree and layers files before anything is typed.

use serde_yaml::{Mapping, Value};

use super::ComposeError;

/// The largest compose file `deploy` reads.
pub(crate) const MAX_FILE_SIZE: u64 = 1 << 20;

/// The deepest nesting of mappings and sequences a compose file may have. Real files stay
/// under 10; the parser's time grows with the square of the depth of nested flow
/// collections (`[[[[…]]]]`), so depth is checked before the real parse.
pub(crate) const MAX_DEPTH: usize = 64;

/// Parses one file's text. A syntax error names its line and column.
pub(crate) fn parse(text: &str) -> Result<Value, ComposeError> {
    check_bounds(text)?;
    let value: Value = serde_yaml::from_str(text).map_err(|e| {
        let full = e.to_string();
        let message = match e.location() {
            Some(at) => {
                // serde_yaml puts the position inside its message; say it once, up front.
                let mark = format!(" at line {} column {}", at.line(), at.column());
                let rest = full.replacen(&mark, "", 1);
                format!(
                    "invalid YAML at line {}, column {}: {rest}",
                    at.line(),
                    at.column()
                )
            }
            None => format!("invalid YAML: {full}"),
        };
        ComposeError::whole(message)
    })?;
    match value {
        // An empty file is an empty layer, which is useful for an override file kept as a stub.
        Value::Null => Ok(Value::Mapping(Mapping::new())),
        Value::Mapping(_) => Ok(value),
        _ => Err(ComposeError::whole(
            "the top level must be a mapping of keys like `services`",
        )),
    }
}

/// Refuses a file larger than `MAX_FILE_SIZE` or nested deeper than `MAX_DEPTH`, with a
/// streaming pass that stops at the first level too deep. Syntax errors are left to the
/// real parse, which reports them with their position.
fn check_bounds(text: &str) -> Result<(), ComposeError> {
    use yaml_rust2::parser::{Event, Parser};
    if text.len() as u64 > MAX_FILE_SIZE {
        return Err(ComposeError::whole(format!(
            "the file is larger than {}, the most a compose file may hold",
            super::bytes::human(MAX_FILE_SIZE)
        )));
    }
    let too_deep = || {
        ComposeError::whole(format!(
            "the file is nested deeper than {MAX_DEPTH} levels, which no compose file needs"
        ))
    };
    let mut parser = Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        match parser.next_token() {
            Ok((Event::SequenceStart(..) | Event::MappingStart(..), _)) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep());
                }
            }
            Ok((Event::SequenceEnd | Event::MappingEnd, _)) => depth = depth.saturating_sub(1),
            Ok((Event::StreamEnd, _)) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.info().contains("recursion limit") => return Err(too_deep()),
            Err(_) => return Ok(()),
        }
    }
}

/// Applies YAML merge keys (`<<: *anchor`, `<<: [*a, *b]`). Keys written in the mapping win
/// over merged ones, and earlier sources win over later ones, as the YAML merge type says.
///
/// serde_yaml's own `apply_merge` copies a source's unresolved `<<` into the target, so a
/// chain of merges (`<<` inside an anchored mapping) would leak a `<<` key; this one resolves
/// each source first.
pub(crate) fn apply_merge_keys(value: &mut Value, path: &mut String) -> Result<(), ComposeError> {
    match value {
        Value::Mapping(map) => {
            if let Some(merge) = map.shift_remove("<<") {
                let sources = match merge {
                    Value::Mapping(m) => vec![Value::Mapping(m)],
                    Value::Sequence(seq) => seq,
                    _ => {
                        return Err(ComposeError::at(
                            join(path, "<<"),
                            "a merge key takes a mapping or a list of mappings",
                        ));
                    }
                };
                for mut source in sources {
                    let len = path.len();
                    path.push_str(if path.is_empty() { "<<" } else { ".<<" });
                    apply_merge_keys(&mut source, path)?;
                    path.truncate(len);
                    let Value::Mapping(source) = source else {
                        return Err(ComposeError::at(
                            join(path, "<<"),
                            "a merge key takes a mapping or a list of mappings",
                        ));
                    };
                    for (k, v) in source {
                        map.entry(k).or_insert(v);
                    }
                }
            }
            for (k, child) in map.iter_mut() {
                let len = path.len();
                push_key(path, k);
                apply_merge_keys(child, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Sequence(seq) => {
            for (i, child) in seq.iter_mut().enumerate() {
                let len = path.len();
                push_index(path, i);
                apply_merge_keys(child, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Tagged(tagged) => apply_merge_keys(&mut tagged.value, path),
        _ => Ok(()),
    }
}

/// How a mapping's keys are to be read when looking for `x-` extensions.
#[derive(Clone, Copy)]
enum Shape {
    /// Keys are compose keys: `x-*` keys are extensions.
    Schema,
    /// Keys are names (services, networks, …): every value is a `Schema` mapping.
    Names,
    /// Keys are user data (environment, labels, …): `x-foo` is a legitimate key.
    Data,
}

/// The one extension `deploy` reads (at the top level); it is typed like any other key.
pub(crate) const X_DEPLOY: &str = "x-deploy";

/// Drops `x-*` extension keys, which the Compose Specification reserves for users (often to
/// hold anchors), except the top-level `x-deploy`. Names and user data are left alone: a
/// label or variable may well be called `x-…`.
pub(crate) fn strip_extensions(top: &mut Value) {
    strip(top, Shape::Schema, true);
}

fn strip(value: &mut Value, shape: Shape, top_level: bool) {
    match value {
        Value::Mapping(map) => match shape {
            Shape::Schema => {
                map.retain(|k, _| {
                    k.as_str()
                        .is_none_or(|k| !k.starts_with("x-") || (top_level && k == X_DEPLOY))
                });
                for (k, child) in map.iter_mut() {
                    let key = k.as_str().unwrap_or_default();
                    strip(child, child_shape(key, top_level), false);
                }
            }
            Shape::Names => {
                for child in map.values_mut() {
                    strip(child, Shape::Schema, false);
                }
            }
            Shape::Data => {}
        },
        Value::Sequence(seq) => {
            for child in seq {
                strip(child, shape, false);
            }
        }
        Value::Tagged(tagged) => strip(&mut tagged.value, shape, top_level),
        _ => {}
    }
}

fn child_shape(key: &str, parent_is_top: bool) -> Shape {
    match key {
        "services" | "networks" | "volumes" | "secrets" | "configs" if parent_is_top => {
            Shape::Names
        }
        // Inside a service: maps keyed by other services or networks.
        "depends_on" | "networks" => Shape::Names,
        "environment" | "labels" | "args" | "driver_opts" | "sysctls" | "extra_hosts"
        | "options" | "annotations" | "ulimits" => Shape::Data,
        _ => Shape::Schema,
    }
}

/// Resolves the layering tags left after merging: `!reset` removes what it tags (so the
/// default applies), `!override` just marks a value that replaced instead of merging.
/// Any other tag is refused rather than read as the plain value.
pub(crate) fn resolve_tags(value: &mut Value, path: &mut String) -> Result<(), ComposeError> {
    match value {
        Value::Mapping(map) => {
            map.retain(|_, v| !is_tag(v, "reset"));
            for (k, child) in map.iter_mut() {
                let len = path.len();
                push_key(path, k);
                resolve_tags(child, path)?;
                path.truncate(len);
            }
        }
        Value::Sequence(seq) => {
            seq.retain(|v| !is_tag(v, "reset"));
            for (i, child) in seq.iter_mut().enumerate() {
                let len = path.len();
                push_index(path, i);
                resolve_tags(child, path)?;
                path.truncate(len);
            }
        }
        Value::Tagged(tagged) => {
            if tagged.tag == "override" {
                let inner = std::mem::take(&mut tagged.value);
                *value = inner;
                return resolve_tags(value, path);
            }
            return Err(ComposeError::at(
                path.clone(),
                format!("the YAML tag `{}` is not supported", tagged.tag),
            ));
        }
        _ => {}
    }
    Ok(())
}

pub(crate) fn is_tag(value: &Value, name: &str) -> bool {
    matches!(value, Value::Tagged(t) if t.tag == name)
}

/// A mapping key as text: keys are usually strings, but YAML allows `80:` or `true:`.
pub(crate) fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    }
}

pub(crate) fn push_key(path: &mut String, key: &Value) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(&key_text(key));
}

pub(crate) fn push_index(path: &mut String, index: usize) {
    path.push_str(&format!("[{index}]"));
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Whether `path` (as `services.web.ports[0]`) leads somewhere in `tree`. Sequence indexes
/// are matched by value against `merged` (the layered tree the path was computed on),
/// because an entry's index in one file differs from its index after layering.
pub(crate) fn contains_path(tree: &Value, merged: &Value, path: &str) -> bool {
    if path.is_empty() {
        return true;
    }
    match (tree, merged) {
        (Value::Tagged(t), _) => contains_path(&t.value, merged, path),
        (_, Value::Tagged(m)) => contains_path(tree, &m.value, path),
        (Value::Mapping(map), Value::Mapping(merged_map)) => {
            let rest = path.strip_prefix('.').unwrap_or(path);
            // Keys may contain dots (`com.example.label`), so try every key that fits.
            map.iter().any(|(k, child)| {
                let k = key_text(k);
                let Some(after) = rest.strip_prefix(k.as_str()) else {
                    return false;
                };
                if !(after.is_empty() || after.starts_with('.') || after.starts_with('[')) {
                    return false;
                }
                let Some(merged_child) = merged_map.get(k.as_str()) else {
                    return false;
                };
                contains_path(child, merged_child, after)
            })
        }
        (Value::Sequence(seq), Value::Sequence(merged_seq)) => {
            let Some(rest) = path.strip_prefix('[') else {
                return false;
            };
            let Some((index, after)) = rest.split_once(']') else {
                return false;
            };
            let Some(wanted) = index.parse::<usize>().ok().and_then(|i| merged_seq.get(i)) else {
                return false;
            };
            seq.iter()
                .any(|item| item == wanted && contains_path(item, wanted, after))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        parse(text).unwrap()
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let err = parse("services:\n  web:\n    image: [a\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("invalid YAML at line 4, column 1: "),
            "{msg}"
        );
    }

    #[test]
    fn chained_merge_keys_resolve() {
        let mut v = yaml(
            "a: &a {x: 1}\nb: &b {<<: *a, y: 2}\nc: {<<: *b, z: 3, x: 9}\nd: {<<: [*a, {x: 5, w: 4}]}\n",
        );
        apply_merge_keys(&mut v, &mut String::new()).unwrap();
        assert_eq!(
            v,
            yaml("a: {x: 1}\nb: {y: 2, x: 1}\nc: {z: 3, x: 9, y: 2}\nd: {x: 1, w: 4}\n")
        );
    }

    #[test]
    fn extensions_are_dropped_but_data_is_kept() {
        let mut v = yaml(
            "x-top: 1\nservices:\n  x-svc:\n    image: a\n    x-note: 1\n    labels: {x-keep: 1}\n    environment: [x-keep=1]\n    healthcheck: {x-h: 1}\n",
        );
        strip_extensions(&mut v);
        assert_eq!(
            v,
            yaml(
                "services:\n  x-svc:\n    image: a\n    labels: {x-keep: 1}\n    environment: [x-keep=1]\n    healthcheck: {}\n"
            )
        );
    }

    #[test]
    fn finds_paths_by_value() {
        let file = yaml("services: {web: {ports: ['80'], labels: {a.b: x}}}");
        let merged = yaml("services: {web: {ports: ['81', '80'], labels: {a.b: x}}}");
        assert!(contains_path(&file, &merged, "services.web.ports[1]"));
        assert!(!contains_path(&file, &merged, "services.web.ports[0]"));
        assert!(contains_path(&file, &merged, "services.web.labels.a.b"));
        assert!(!contains_path(&file, &merged, "services.db"));
    }
}
