//! Replaces every registered secret value by `***` before a line reaches any sink.

use std::borrow::Cow;

/// The secret values to hide. Holds them in memory for the life of the deploy, which is no
/// longer than the pipeline itself holds them.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    /// Longest first, without duplicates.
    secrets: Vec<String>,
}

/// Lines of a multi-line secret shorter than this are structure (`{`, `}`, `--`), not secret
/// material; hiding them everywhere would make every log unreadable without hiding anything.
/// A whole secret this short is refused before it gets here (`preflight`).
const MIN_LINE_PIECE: usize = 4;

impl Redactor {
    /// Registers a secret. Surrounding whitespace is ignored (secret files usually end with a
    /// newline) and an empty value is ignored. Each long enough line of a multi-line value is
    /// registered as well, since output reaches us one line at a time.
    pub(crate) fn add(&mut self, value: &str) {
        let value = value.trim();
        if value.is_empty() {
            return;
        }
        self.insert(value);
        if value.contains('\n') {
            for piece in value.lines().map(str::trim) {
                if piece.chars().count() >= MIN_LINE_PIECE {
                    self.insert(piece);
                }
            }
        }
    }

    fn insert(&mut self, value: &str) {
        if self.secrets.iter().any(|s| s == value) {
            return;
        }
        let at = self.secrets.partition_point(|s| s.len() >= value.len());
        self.secrets.insert(at, value.to_owned());
    }

    /// `text` with every occurrence of every secret replaced by `***`. Occurrences that
    /// overlap (of the same secret or of different ones) merge into one `***`, so no fragment
    /// of either survives. Works on multi-line text too.
    pub(crate) fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for secret in &self.secrets {
            let mut from = 0;
            while let Some(found) = text[from..].find(secret.as_str()) {
                let start = from + found;
                spans.push((start, start + secret.len()));
                // Step one character, not the whole match: occurrences may overlap (`aa` in
                // `aaa`).
                from = start + text[start..].chars().next().map_or(1, char::len_utf8);
            }
        }
        if spans.is_empty() {
            return Cow::Borrowed(text);
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut spans = spans.into_iter().peekable();
        while let Some((start, mut end)) = spans.next() {
            while let Some(&(next_start, next_end)) = spans.peek() {
                if next_start > end {
                    break;
                }
                end = end.max(next_end);
                spans.next();
            }
            out.push_str(&text[copied..start]);
            out.push_str("***");
            copied = end;
        }
        out.push_str(&text[copied..]);
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(secrets: &[&str]) -> Redactor {
        let mut r = Redactor::default();
        for s in secrets {
            r.add(s);
        }
        r
    }

    #[test]
    fn replaces_every_occurrence() {
        let r = redactor(&["s3cret"]);
        assert_eq!(r.redact("a s3cret and s3cret again"), "a *** and *** again");
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn registers_the_trimmed_value_and_skips_empty_ones() {
        let r = redactor(&["hunter2\n", "", "  \n"]);
        assert_eq!(r.redact("pw=hunter2\n"), "pw=***\n");
        assert_eq!(r.secrets, ["hunter2"]);
    }

    #[test]
    fn longer_secret_containing_a_shorter_one_redacts_fully() {
        // Registered short first: order of registration must not matter.
        let r = redactor(&["pass", "password123"]);
        assert_eq!(r.redact("x password123 y pass"), "x *** y ***");
    }

    #[test]
    fn overlapping_secrets_leave_no_fragment() {
        let r = redactor(&["abcd", "cdef"]);
        assert_eq!(r.redact("xabcdefx"), "x***x");
        let r = redactor(&["aa"]);
        assert_eq!(r.redact("aaa b"), "*** b");
    }

    #[test]
    fn redacts_in_multi_line_text() {
        let r = redactor(&["tok3n"]);
        assert_eq!(
            r.redact("line one tok3n\nline two\ntok3n"),
            "line one ***\nline two\n***"
        );
    }

    #[test]
    fn multi_line_secret_is_also_hidden_line_by_line() {
        let key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n}\n-----END KEY-----\n";
        let r = redactor(&[key]);
        assert_eq!(r.redact(key.trim()), "***");
        assert_eq!(
            r.redact("got MIIEvQIBADANBgkqhkiG9w0B here"),
            "got *** here"
        );
        // Every line of four characters or more is hidden on its own; shorter structural
        // lines stay readable elsewhere.
        assert_eq!(r.redact("got } here"), "got } here");
        let r = redactor(&["{\n  \"k\": 1,\n  pw9x\n}\n"]);
        assert_eq!(r.redact("x pw9x y"), "x *** y");
    }

    #[test]
    fn non_ascii_text_around_secrets() {
        let r = redactor(&["ü-secret"]);
        assert_eq!(r.redact("ä ü-secret ö"), "ä *** ö");
    }
}
