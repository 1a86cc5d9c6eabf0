//! `${VAR}` interpolation of every string value, as the Compose Specification defines it.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::ComposeError;
use super::tree::{push_index, push_key};

/// Variables that were used without being set and without a default. docker-compose
/// substitutes an empty string and warns; the caller decides how to warn.
#[derive(Debug, Default)]
pub(crate) struct Unset {
    /// Variable name → where it was first used.
    pub(crate) first_use: BTreeMap<String, String>,
}

/// Interpolates every string scalar of `tree` in place. Keys are left as written.
pub(crate) fn tree(
    value: &mut Value,
    env: &BTreeMap<String, String>,
    unset: &mut Unset,
    path: &mut String,
) -> Result<(), ComposeError> {
    match value {
        Value::String(s) => {
            if s.contains('$') {
                let mut names = Vec::new();
                *s = interpolate(s, env, &mut names)
                    .map_err(|message| ComposeError::at(path.clone(), message))?;
                for name in names {
                    unset.first_use.entry(name).or_insert_with(|| path.clone());
                }
            }
        }
        Value::Mapping(map) => {
            for (k, child) in map.iter_mut() {
                let len = path.len();
                push_key(path, k);
                tree(child, env, unset, path)?;
                path.truncate(len);
            }
        }
        Value::Sequence(seq) => {
            for (i, child) in seq.iter_mut().enumerate() {
                let len = path.len();
                push_index(path, i);
                tree(child, env, unset, path)?;
                path.truncate(len);
            }
        }
        Value::Tagged(tagged) => tree(&mut tagged.value, env, unset, path)?,
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(())
}

/// Interpolates one string. Names of variables used bare (`$X`, `${X}`) while unset are
/// pushed to `unset`; they become empty, as in docker-compose.
pub(crate) fn interpolate(
    template: &str,
    env: &BTreeMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<String, String> {
    let invalid =
        || format!("invalid interpolation format in `{template}`; write `$$` for a literal `$`");
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let close = matching_brace(r).ok_or_else(|| {
                format!("unclosed `${{` in `{template}`; write `$$` for a literal `$`")
            })?;
            out.push_str(&braced(&r[..close], env, unset).map_err(|e| match e {
                Braced::Invalid => invalid(),
                Braced::Message(m) => m,
            })?);
            rest = &r[close + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                return Err(invalid());
            }
            let name = &after[..len];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => unset.push(name.to_owned()),
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

enum Braced {
    Invalid,
    Message(String),
}

/// Evaluates the inside of `${…}`. Defaults and alternatives are interpolated only when
/// chosen, so an unused default never fails or warns.
fn braced(
    expr: &str,
    env: &BTreeMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<String, Braced> {
    let len = name_len(expr);
    if len == 0 {
        return Err(Braced::Invalid);
    }
    let (name, op) = expr.split_at(len);
    let value = env.get(name);
    let nested = |word: &str, unset: &mut Vec<String>| {
        interpolate(word, env, unset).map_err(Braced::Message)
    };
    if op.is_empty() {
        return Ok(match value {
            Some(v) => v.clone(),
            None => {
                unset.push(name.to_owned());
                String::new()
            }
        });
    }
    let set_non_empty = value.is_some_and(|v| !v.is_empty());
    let set = value.is_some();
    let (word, result) = if let Some(w) = op.strip_prefix(":-") {
        (w, (!set_non_empty).then_some(Choice::Word))
    } else if let Some(w) = op.strip_prefix('-') {
        (w, (!set).then_some(Choice::Word))
    } else if let Some(w) = op.strip_prefix(":?") {
        (w, (!set_non_empty).then_some(Choice::Fail))
    } else if let Some(w) = op.strip_prefix('?') {
        (w, (!set).then_some(Choice::Fail))
    } else if let Some(w) = op.strip_prefix(":+") {
        (
            w,
            Some(if set_non_empty {
                Choice::Word
            } else {
                Choice::Empty
            }),
        )
    } else if let Some(w) = op.strip_prefix('+') {
        (w, Some(if set { Choice::Word } else { Choice::Empty }))
    } else {
        return Err(Braced::Invalid);
    };
    match result {
        None => Ok(value.cloned().unwrap_or_default()),
        Some(Choice::Word) => nested(word, unset),
        Some(Choice::Empty) => Ok(String::new()),
        Some(Choice::Fail) => {
            let message = nested(word, unset)?;
            Err(Braced::Message(if message.is_empty() {
                format!("required variable `{name}` is missing a value")
            } else {
                format!("required variable `{name}` is missing a value: {message}")
            }))
        }
    }
}

enum Choice {
    Word,
    Empty,
    Fail,
}

/// Length of the variable name at the start of `s`: `[_A-Za-z][_A-Za-z0-9]*`.
fn name_len(s: &str) -> usize {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b == b'_' || b.is_ascii_alphabetic() => {}
        _ => return 0,
    }
    1 + bytes
        .take_while(|b| *b == b'_' || b.is_ascii_alphanumeric())
        .count()
}

/// Index of the `}` closing a `${` whose inside starts `s`, skipping nested `${…}` and `$$`.
fn matching_brace(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 1;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("A", "a"), ("EMPTY", ""), ("B", "b")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    fn run(s: &str) -> Result<(String, Vec<String>), String> {
        let mut unset = Vec::new();
        interpolate(s, &env(), &mut unset).map(|v| (v, unset))
    }

    fn ok(s: &str) -> String {
        run(s).unwrap().0
    }

    #[test]
    fn forms() {
        assert_eq!(ok("$A-${A}"), "a-a");
        assert_eq!(ok("x${A}y$B.z"), "xayb.z");
        assert_eq!(ok("$$A $${A}"), "$A ${A}");
        assert_eq!(ok("${EMPTY:-d}|${EMPTY-d}|${NOPE-d}"), "d||d");
        assert_eq!(
            ok("${A:+alt}|${EMPTY:+alt}|${EMPTY+alt}|${NOPE+alt}"),
            "alt||alt|"
        );
        assert_eq!(
            ok("${NOPE:-${B}}|${NOPE:-${NOPE2:-deep}}|${NOPE:-$A}"),
            "b|deep|a"
        );
        assert_eq!(ok("${NOPE:-a}}"), "a}");
        assert_eq!(ok("${A:?unused ${NOPE}}"), "a");
    }

    #[test]
    fn unset_is_empty_and_reported() {
        let (v, unset) = run("[$NOPE][${NOPE2}][${NOPE3:-x}]").unwrap();
        assert_eq!(v, "[][][x]");
        assert_eq!(unset, ["NOPE", "NOPE2"]);
    }

    #[test]
    fn required() {
        assert_eq!(
            run("${NOPE:?set it in .env}").unwrap_err(),
            "required variable `NOPE` is missing a value: set it in .env"
        );
        assert_eq!(
            run("${EMPTY:?}").unwrap_err(),
            "required variable `EMPTY` is missing a value"
        );
        assert_eq!(ok("${EMPTY?}"), "");
        assert_eq!(
            run("${NOPE?need ${A}}").unwrap_err(),
            "required variable `NOPE` is missing a value: need a"
        );
    }

    #[test]
    fn invalid() {
        for bad in ["$", "a$", "$1", "${}", "${A%x}", "${ A}", "${A"] {
            assert!(run(bad).is_err(), "{bad}");
        }
    }
}
