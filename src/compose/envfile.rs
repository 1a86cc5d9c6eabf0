//! `.env`-style files (`env_file:`, and the interpolation `.env`), read as docker-compose v1
//! reads them through python-dotenv, without variable expansion.
//!
//! - blank lines and lines starting with `#` are skipped; a leading `export ` is dropped;
//! - `KEY=VALUE`: whitespace around the key and an unquoted value is trimmed, and an
//!   unquoted value ends at ` #` (an inline comment);
//! - `'single'` quotes keep everything literally; `"double"` quotes understand `\n`, `\t`,
//!   `\r`, `\\`, `\"` and `\'`; both may span lines;
//! - a bare `KEY` (no `=`) takes its value from the caller's environment, like a bare
//!   `environment:` entry;
//! - `$` is never expanded: a password with a `$` in it arrives as written.

use std::collections::BTreeMap;

use super::ComposeError;
use super::spec::{EnvFile, Spec};

/// One `KEY=VALUE` line; `None` is a bare `KEY`.
pub(crate) type Entry = (String, Option<String>);

/// Parses the text of an env file. The error names the 1-based line.
pub(crate) fn parse(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let lineno = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((key, value)) = line.split_once('=') else {
            check_key(line, lineno)?;
            out.push((line.to_owned(), None));
            continue;
        };
        let key = key.trim();
        check_key(key, lineno)?;
        let value = value.trim_start();
        let value = match value.chars().next() {
            Some(quote @ ('"' | '\'')) => {
                let mut body = value[1..].to_owned();
                loop {
                    if let Some(end) = closing_quote(&body, quote) {
                        let rest = body[end + 1..].trim();
                        if !(rest.is_empty() || rest.starts_with('#')) {
                            return Err((
                                lineno,
                                format!("unexpected text after the closing quote of `{key}`"),
                            ));
                        }
                        body.truncate(end);
                        break;
                    }
                    let Some((_, next)) = lines.next() else {
                        return Err((
                            lineno,
                            format!("the value of `{key}` has no closing {quote}"),
                        ));
                    };
                    body.push('\n');
                    body.push_str(next);
                }
                if quote == '"' { unescape(&body) } else { body }
            }
            _ => {
                let end = value.find(" #").or_else(|| value.find("\t#"));
                value[..end.unwrap_or(value.len())].trim_end().to_owned()
            }
        };
        out.push((key.to_owned(), Some(value)));
    }
    Ok(out)
}

fn check_key(key: &str, lineno: usize) -> Result<(), (usize, String)> {
    let ok = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err((lineno, format!("`{key}` is not a variable name")))
    }
}

/// Byte index of the quote that ends a value, skipping `\"` in double quotes.
fn closing_quote(body: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quote == '"' {
            escaped = true;
        } else if c == quote {
            return Some(i);
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(c @ ('\\' | '"' | '\'')) => out.push(c),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// Fills each service's environment from its `env_file:` entries, now that the policy has
/// judged their paths: the files' entries in order, then the `environment:` key, later
/// entries winning. `read` returns a file's text, or `None` when it does not exist; a bare
/// `KEY` in a file takes its value from `env`.
pub(crate) fn merge_into(
    spec: &mut Spec,
    env: &BTreeMap<String, String>,
    mut read: impl FnMut(&EnvFile) -> Result<Option<String>, ComposeError>,
) -> Result<(), ComposeError> {
    for service in spec.services.values_mut() {
        let mut merged = BTreeMap::new();
        for file in &service.env_files {
            let Some(text) = read(file)? else {
                if file.required {
                    return Err(ComposeError::at(
                        &file.key_path,
                        format!("env file `{}` does not exist", file.path.display()),
                    ));
                }
                continue;
            };
            let entries = parse(&text).map_err(|(line, m)| {
                ComposeError::at(
                    &file.key_path,
                    format!("`{}` line {line}: {m}", file.path.display()),
                )
            })?;
            for (k, v) in entries {
                let v = v.or_else(|| env.get(&k).cloned());
                merged.insert(k, v);
            }
        }
        merged.extend(std::mem::take(&mut service.environment));
        service.environment = merged;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> Entry {
        (k.to_owned(), Some(v.to_owned()))
    }

    #[test]
    fn reads_dotenv_forms() {
        let text = "\u{feff}# comment\n\nA=1\n B = two words \nexport C=3\nD='single $HOME #x'\nE=\"line\\nnext \\\"q\\\"\"\nF=val # comment\nG=a#b\nH=\nI\nJ=\"multi\nline\"\nK='x' # c\n";
        assert_eq!(
            parse(text).unwrap(),
            vec![
                kv("A", "1"),
                kv("B", "two words"),
                kv("C", "3"),
                kv("D", "single $HOME #x"),
                kv("E", "line\nnext \"q\""),
                kv("F", "val"),
                kv("G", "a#b"),
                kv("H", ""),
                ("I".to_owned(), None),
                kv("J", "multi\nline"),
                kv("K", "x"),
            ]
        );
    }

    #[test]
    fn rejects_bad_lines() {
        assert_eq!(parse("A=1\nB C=2\n").unwrap_err().0, 2);
        assert_eq!(parse("A=\"open\n").unwrap_err().0, 1);
        assert_eq!(parse("A='x' y\n").unwrap_err().0, 1);
    }
}
