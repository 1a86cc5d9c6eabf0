//! Newtypes for the identifiers every layer passes around, each valid by construction.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A full 40-hex git commit id. Short shas, tags and `main~1` are resolved by `git` first.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct Revision(String);

impl Revision {
    pub(crate) fn parse(s: &str) -> Result<Self, InvalidId> {
        if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(InvalidId::new(
                "revision",
                s,
                "expected a full 40-hex commit id",
            ))
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The 12-character form used in container names and short messages.
    pub(crate) fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Revision {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        Self::parse(&s)
    }
}

impl From<Revision> for String {
    fn from(r: Revision) -> String {
        r.0
    }
}

/// A compose service name: `[a-zA-Z0-9._-]+`, as the Compose Specification allows.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct ServiceName(String);

impl ServiceName {
    pub(crate) fn parse(s: &str) -> Result<Self, InvalidId> {
        let ok = !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidId::new(
                "service name",
                s,
                "use only letters, digits, `.`, `_` and `-`",
            ))
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ServiceName {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        Self::parse(&s)
    }
}

impl From<ServiceName> for String {
    fn from(s: ServiceName) -> String {
        s.0
    }
}

/// The project name that prefixes every container, network, volume and default image name:
/// lowercase `[a-z0-9][a-z0-9_-]*`, as docker-compose requires.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct ProjectName(String);

impl ProjectName {
    pub(crate) fn parse(s: &str) -> Result<Self, InvalidId> {
        let mut bytes = s.bytes();
        let ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && bytes
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidId::new(
                "project name",
                s,
                "use lowercase letters, digits, `_` and `-`, starting with a letter or digit",
            ))
        }
    }

    /// Derives a valid name from anything (a directory name, say), as docker-compose does.
    pub(crate) fn sanitize(raw: &str) -> Option<Self> {
        let cleaned: String = raw
            .to_ascii_lowercase()
            .chars()
            .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
            .collect();
        let cleaned = cleaned.trim_start_matches(['_', '-']);
        Self::parse(cleaned).ok()
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ProjectName {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        Self::parse(&s)
    }
}

impl From<ProjectName> for String {
    fn from(p: ProjectName) -> String {
        p.0
    }
}

/// An environment's name (`production`, `staging`, a preview's `feature-login`): `[a-z0-9-]`,
/// starting with a letter or digit, at most 40 characters. It names a folder under
/// `ROOT/envs/` and suffixes the project name, so nothing else may pass.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct EnvName(String);

impl EnvName {
    pub(crate) const MAX_LEN: usize = 40;

    pub(crate) fn parse(s: &str) -> Result<Self, InvalidId> {
        let ok = s.len() <= Self::MAX_LEN
            && s.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidId::new(
                "environment name",
                s,
                "use lowercase letters, digits and `-`, starting with a letter or digit, at most 40 characters",
            ))
        }
    }

    /// The environment a ROOT without `environments:` has, whose paths and names are those
    /// of a host set up before environments existed.
    pub(crate) fn production() -> Self {
        Self("production".to_owned())
    }

    pub(crate) fn is_production(&self) -> bool {
        self.0 == "production"
    }

    /// A preview's name from its branch: lower case, every run of other characters one `-`,
    /// at most 40 characters; a name that had to be shortened ends with a hash of the whole
    /// branch, so two long branches never share a preview.
    pub(crate) fn of_branch(branch: &str) -> Option<Self> {
        let mut out = String::new();
        for c in branch.chars() {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                out.push(c);
            } else if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        let mut name = out.trim_end_matches('-').to_owned();
        if name.len() > Self::MAX_LEN {
            use sha2::Digest;
            let hash = format!("{:x}", sha2::Sha256::digest(branch.as_bytes()));
            name.truncate(Self::MAX_LEN - 9);
            name = format!("{}-{}", name.trim_end_matches('-'), &hash[..8]);
        }
        Self::parse(&name).ok()
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for EnvName {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        Self::parse(s)
    }
}

impl TryFrom<String> for EnvName {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        Self::parse(&s)
    }
}

impl From<EnvName> for String {
    fn from(e: EnvName) -> String {
        e.0
    }
}

/// The ledger's row id of one deploy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct DeploymentId(pub(crate) i64);

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Who pushed, made safe to put in a file name: no `/`, no `..`, no control or shell
/// characters, never empty.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct UserName(String);

impl UserName {
    /// Keeps letters, digits, `.`, `_`, `-` and `@`; every other character becomes `_`.
    /// Runs of dots collapse so `..` can never appear, and a leading dot is dropped so the
    /// log file is never hidden.
    pub(crate) fn sanitize(raw: &str) -> Self {
        let mut out = String::with_capacity(raw.len());
        for c in raw.trim().chars() {
            let c = if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@') {
                c
            } else {
                '_'
            };
            if c == '.' && (out.is_empty() || out.ends_with('.')) {
                continue;
            }
            out.push(c);
        }
        out.truncate(64);
        if out.is_empty() || out.bytes().all(|b| b == b'_') {
            out = "unknown".to_owned();
        }
        Self(out)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name or id that failed its newtype's rules.
#[derive(Debug, thiserror::Error)]
#[error("invalid {kind} `{value}`: {reason}")]
pub(crate) struct InvalidId {
    kind: &'static str,
    value: String,
    reason: &'static str,
}

impl InvalidId {
    fn new(kind: &'static str, value: &str, reason: &'static str) -> Self {
        Self {
            kind,
            value: value.escape_debug().to_string(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_requires_full_hex() {
        assert!(Revision::parse("abc").is_err());
        let r = Revision::parse(&"A".repeat(40)).unwrap();
        assert_eq!(r.as_str(), "a".repeat(40));
        assert_eq!(r.short(), "a".repeat(12));
    }

    #[test]
    fn user_name_sanitizer() {
        let cases = [
            ("alice", "alice"),
            ("Bob Smith", "Bob_Smith"),
            ("../../etc/passwd", "_._etc_passwd"),
            ("..", "unknown"),
            ("a/b", "a_b"),
            ("evil\nname", "evil_name"),
            ("$(rm -rf /)", "__rm_-rf___"),
            ("x..y", "x.y"),
            (".hidden", "hidden"),
            ("", "unknown"),
            ("   ", "unknown"),
            ("jane@uni.edu", "jane@uni.edu"),
            ("ünï", "_n_"),
        ];
        for (raw, want) in cases {
            let got = UserName::sanitize(raw);
            let got = got.as_str();
            assert_eq!(got, want, "{raw:?}");
            assert!(!got.contains('/') && !got.contains("..") && !got.is_empty());
        }
    }

    #[test]
    fn project_name_sanitize() {
        assert_eq!(ProjectName::sanitize("My_App").unwrap().as_str(), "my_app");
        assert_eq!(ProjectName::sanitize("-x.y").unwrap().as_str(), "xy");
        assert!(ProjectName::sanitize("...").is_none());
        assert!(ProjectName::parse("Bad").is_err());
    }

    #[test]
    fn environment_names() {
        assert!(EnvName::parse("staging").is_ok());
        for bad in ["Staging", "", "-x", "a_b", "a/b", "..", &"a".repeat(41)] {
            assert!(EnvName::parse(bad).is_err(), "{bad}");
        }
        let of = |b: &str| EnvName::of_branch(b).map(|e| e.0);
        assert_eq!(of("feature/Login").as_deref(), Some("feature-login"));
        assert_eq!(of("fix/a__b--c/").as_deref(), Some("fix-a-b-c"));
        assert_eq!(of("/////"), None);
        let (a, b) = (
            of(&format!("feature/{}-a", "x".repeat(40))),
            of(&format!("feature/{}-b", "x".repeat(40))),
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.len() <= 40 && b.len() <= 40 && a != b, "{a} {b}");
    }

    #[test]
    fn service_name_rules() {
        assert!(ServiceName::parse("web-1.a_b").is_ok());
        assert!(ServiceName::parse("we b").is_err());
        assert!(ServiceName::parse("").is_err());
    }
}
