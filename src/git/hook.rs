//! Parsing what git gives a post-receive hook on stdin: `<old> <new> <ref>` lines.
//!
//! Pure: no git2, no I/O. Everything here comes from the pusher, so ref names are kept as
//! data (never interpolated into a shell) and anything a terminal would interpret is refused.

use std::fmt;

/// One updated ref, as git reported it to the hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RefUpdate {
    /// The object id before the push (lowercase hex); all zeros when the ref was created.
    pub(crate) old: String,
    /// The object id after the push (lowercase hex); all zeros when the ref was deleted.
    pub(crate) new: String,
    /// The full ref name, `refs/heads/main` or `refs/tags/v1`, exactly as pushed.
    pub(crate) refname: String,
}

impl RefUpdate {
    /// `refs/heads/feature/x` → `feature/x`; `None` for tags and other refs.
    pub(crate) fn branch(&self) -> Option<&str> {
        self.refname
            .strip_prefix("refs/heads/")
            .filter(|b| !b.is_empty())
    }

    pub(crate) fn is_delete(&self) -> bool {
        is_zero(&self.new)
    }

    #[cfg(test)]
    pub(crate) fn is_create(&self) -> bool {
        is_zero(&self.old)
    }
}

/// Why a line of hook input was refused; `line` counts from 1.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("read line {line} of the post-receive input: {reason}")]
pub(crate) struct HookInputError {
    line: usize,
    reason: HookInputProblem,
}

#[derive(Debug, PartialEq, Eq)]
enum HookInputProblem {
    FieldCount(usize),
    BadSha { which: &'static str, value: String },
    ShaLengthsDiffer,
    BothZero,
    EmptyRefname,
    SpaceInRefname,
    ControlInRefname(String),
}

impl fmt::Display for HookInputProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FieldCount(n) => write!(
                f,
                "expected `<old-sha> <new-sha> <refname>`, found {n} field{}",
                if *n == 1 { "" } else { "s" }
            ),
            Self::BadSha { which, value } => {
                write!(f, "the {which} sha `{value}` is not 40 or 64 hex digits")
            }
            Self::ShaLengthsDiffer => f.write_str("the old and new shas differ in length"),
            Self::BothZero => f.write_str("both shas are all zeros"),
            Self::EmptyRefname => f.write_str("the ref name is empty"),
            Self::SpaceInRefname => f.write_str("the ref name contains a space"),
            Self::ControlInRefname(escaped) => {
                write!(f, "the ref name `{escaped}` contains a control character")
            }
        }
    }
}

/// Parses the whole of the hook's stdin. Blank lines are skipped; the first bad line fails
/// the lot, since acting on half a push would deploy something the pusher did not expect.
pub(crate) fn parse_hook_input(input: &str) -> Result<Vec<RefUpdate>, HookInputError> {
    // Split on `\n` only: `str::lines` would silently drop a `\r`, which must be refused
    // like any other control character in a ref name.
    input
        .split('\n')
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            parse_line(line).map_err(|reason| HookInputError {
                line: i + 1,
                reason,
            })
        })
        .collect()
}

fn parse_line(line: &str) -> Result<RefUpdate, HookInputProblem> {
    let mut fields = line.splitn(3, ' ');
    let (Some(old), Some(new), Some(refname)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(HookInputProblem::FieldCount(line.split(' ').count()));
    };
    let old = parse_sha("old", old)?;
    let new = parse_sha("new", new)?;
    if old.len() != new.len() {
        return Err(HookInputProblem::ShaLengthsDiffer);
    }
    if is_zero(&old) && is_zero(&new) {
        return Err(HookInputProblem::BothZero);
    }
    check_refname(refname)?;
    Ok(RefUpdate {
        old,
        new,
        refname: refname.to_owned(),
    })
}

fn parse_sha(which: &'static str, s: &str) -> Result<String, HookInputProblem> {
    if matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(HookInputProblem::BadSha {
            which,
            value: escape(s),
        })
    }
}

fn check_refname(refname: &str) -> Result<(), HookInputProblem> {
    if refname.is_empty() {
        return Err(HookInputProblem::EmptyRefname);
    }
    // The name is echoed to the pusher's terminal and written to logs: an ESC or a newline
    // in it could forge lines there.
    if refname.chars().any(char::is_control) {
        return Err(HookInputProblem::ControlInRefname(escape(refname)));
    }
    if refname.contains(' ') {
        return Err(HookInputProblem::SpaceInRefname);
    }
    Ok(())
}

fn is_zero(sha: &str) -> bool {
    sha.bytes().all(|b| b == b'0')
}

/// Printable form of untrusted text for an error message, cut short so a huge line cannot
/// flood the pusher's terminal.
fn escape(s: &str) -> String {
    const MAX: usize = 80;
    let mut escaped = s.escape_debug();
    let mut out: String = escaped.by_ref().take(MAX).collect();
    if escaped.next().is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";
    const Z: &str = "0000000000000000000000000000000000000000";

    fn one(input: &str) -> RefUpdate {
        let mut updates = parse_hook_input(input).unwrap();
        assert_eq!(updates.len(), 1);
        updates.remove(0)
    }

    fn err(input: &str) -> String {
        parse_hook_input(input).unwrap_err().to_string()
    }

    #[test]
    fn plain_branch_update() {
        let u = one(&format!("{A} {B} refs/heads/main\n"));
        assert_eq!(u.old, A);
        assert_eq!(u.new, B);
        assert_eq!(u.refname, "refs/heads/main");
        assert_eq!(u.branch(), Some("main"));
        assert!(!u.is_create() && !u.is_delete());
    }

    #[test]
    fn branch_with_slashes_is_kept_whole() {
        let u = one(&format!("{A} {B} refs/heads/feature/login/v2"));
        assert_eq!(u.branch(), Some("feature/login/v2"));
    }

    #[test]
    fn created_branch() {
        let u = one(&format!("{Z} {B} refs/heads/new"));
        assert!(u.is_create() && !u.is_delete());
    }

    #[test]
    fn deleted_branch() {
        let u = one(&format!("{A} {Z} refs/heads/old"));
        assert!(u.is_delete() && !u.is_create());
        assert_eq!(u.branch(), Some("old"));
    }

    #[test]
    fn tag_push_is_not_a_branch() {
        let u = one(&format!("{Z} {B} refs/tags/v1.0"));
        assert_eq!(u.branch(), None);
        assert_eq!(u.refname, "refs/tags/v1.0");
        assert!(u.is_create());
    }

    #[test]
    fn other_refs_are_not_branches() {
        assert_eq!(one(&format!("{A} {B} refs/heads/")).branch(), None);
        assert_eq!(one(&format!("{A} {B} refs/notes/commits")).branch(), None);
        assert_eq!(one(&format!("{A} {B} refs/headsx/main")).branch(), None);
    }

    #[test]
    fn several_lines_keep_their_order_and_skip_blanks() {
        let input = format!(
            "\n{A} {B} refs/heads/main\n  \n{Z} {A} refs/tags/v2\n{B} {Z} refs/heads/gone\n"
        );
        let updates = parse_hook_input(&input).unwrap();
        let names: Vec<_> = updates.iter().map(|u| u.refname.as_str()).collect();
        assert_eq!(
            names,
            ["refs/heads/main", "refs/tags/v2", "refs/heads/gone"]
        );
    }

    #[test]
    fn empty_input_is_no_updates() {
        assert_eq!(parse_hook_input("").unwrap(), []);
        assert_eq!(parse_hook_input("\n\n").unwrap(), []);
    }

    #[test]
    fn sha256_ids_are_accepted() {
        let old = "a".repeat(64);
        let new = "B".repeat(64);
        let u = one(&format!("{old} {new} refs/heads/main"));
        assert_eq!(u.new, "b".repeat(64));
    }

    #[test]
    fn malformed_lines_name_the_line_and_the_reason() {
        let cases = [
            (
                format!("{A} {B} refs/heads/main\n{A} {B}\n"),
                "read line 2 of the post-receive input: expected `<old-sha> <new-sha> <refname>`, found 2 fields",
            ),
            (
                "garbage".to_owned(),
                "read line 1 of the post-receive input: expected `<old-sha> <new-sha> <refname>`, found 1 field",
            ),
            (
                format!("{A} 123 refs/heads/main"),
                "read line 1 of the post-receive input: the new sha `123` is not 40 or 64 hex digits",
            ),
            (
                format!("{} {B} refs/heads/main", "g".repeat(40)),
                "read line 1 of the post-receive input: the old sha `gggggggggggggggggggggggggggggggggggggggg` is not 40 or 64 hex digits",
            ),
            (
                format!("{A} {} refs/heads/main", "b".repeat(64)),
                "read line 1 of the post-receive input: the old and new shas differ in length",
            ),
            (
                format!("{Z} {Z} refs/heads/main"),
                "read line 1 of the post-receive input: both shas are all zeros",
            ),
            (
                format!("{A} {B} "),
                "read line 1 of the post-receive input: the ref name is empty",
            ),
            (
                format!("{A} {B} refs/heads/a b"),
                "read line 1 of the post-receive input: the ref name contains a space",
            ),
            (
                format!("{A}  {B} refs/heads/main"),
                "read line 1 of the post-receive input: the new sha `` is not 40 or 64 hex digits",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(err(&input), want, "{input:?}");
        }
    }

    #[test]
    fn control_characters_in_ref_names_are_refused() {
        for name in [
            "refs/heads/a\u{1b}[31mred",
            "refs/heads/nul\0",
            "refs/heads/cr\r",
            "refs/heads/\u{7f}",
        ] {
            let msg = err(&format!("{A} {B} {name}"));
            assert!(msg.contains("contains a control character"), "{msg}");
            assert!(!msg.chars().any(char::is_control), "{msg:?}");
        }
        // A newline ends the line, so the rest is a second, malformed line.
        assert_eq!(
            err(&format!("{A} {B} refs/heads/a\nb")),
            "read line 2 of the post-receive input: expected `<old-sha> <new-sha> <refname>`, found 1 field"
        );
    }

    #[test]
    fn shell_metacharacters_are_just_data() {
        let u = one(&format!("{A} {B} refs/heads/$(rm;-rf)`x`"));
        assert_eq!(u.branch(), Some("$(rm;-rf)`x`"));
    }

    #[test]
    fn huge_bad_values_are_cut_short_in_messages() {
        let msg = err(&format!("{} {B} refs/heads/main", "x".repeat(10_000)));
        assert!(msg.len() < 300, "{msg}");
        assert!(msg.contains('…'));
    }
}
