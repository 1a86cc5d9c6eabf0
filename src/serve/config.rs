//! What `deploy serve` listens on for hostnames, and where the certificates are: its flags,
//! or the same keys in the host-wide `/etc/deploy/serve.yml` (`DEPLOY_SERVE_CONFIG` names
//! another file). `deploy status` reads the same file to say which hostnames have HTTPS.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The host-wide file, unless `DEPLOY_SERVE_CONFIG` names another.
pub(crate) const DEFAULT_FILE: &str = "/etc/deploy/serve.yml";

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServeConfig {
    /// Plain HTTP for hostnames.
    pub(crate) http: SocketAddr,
    /// HTTPS for hostnames.
    pub(crate) https: SocketAddr,
    /// The operator's certificates (`tls.rs`).
    pub(crate) certs: PathBuf,
    /// The registered roots (`registry.rs`).
    pub(crate) roots: PathBuf,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            http: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 80)),
            https: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 443)),
            certs: PathBuf::from("/etc/deploy/certs"),
            roots: PathBuf::from("/etc/deploy/roots"),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    http: Option<String>,
    https: Option<String>,
    certs: Option<PathBuf>,
    roots_dir: Option<PathBuf>,
}

impl ServeConfig {
    /// The host-wide file's settings over the defaults; a missing file is every default.
    pub(crate) fn load() -> anyhow::Result<Self> {
        let path = std::env::var_os("DEPLOY_SERVE_CONFIG")
            .map_or_else(|| PathBuf::from(DEFAULT_FILE), PathBuf::from);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(
                    anyhow::anyhow!(e).context(format!("failed to read `{}`", path.display()))
                );
            }
        };
        Self::parse(&text, &path)
    }

    fn parse(text: &str, path: &Path) -> anyhow::Result<Self> {
        let raw: Raw = if text.trim().is_empty() {
            Raw::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("`{}`: {e}", path.display()))?
        };
        let mut config = Self::default();
        config
            .set(raw.http.as_deref(), raw.https.as_deref(), raw.certs)
            .map_err(|e| anyhow::anyhow!("`{}`: {e}", path.display()))?;
        if let Some(roots) = raw.roots_dir {
            config.roots = roots;
        }
        Ok(config)
    }

    /// Overrides with what is given (flags, or the file's keys).
    pub(crate) fn set(
        &mut self,
        http: Option<&str>,
        https: Option<&str>,
        certs: Option<PathBuf>,
    ) -> anyhow::Result<()> {
        if let Some(http) = http {
            self.http = listen_addr(http).map_err(|e| anyhow::anyhow!("http: {e}"))?;
        }
        if let Some(https) = https {
            self.https = listen_addr(https).map_err(|e| anyhow::anyhow!("https: {e}"))?;
        }
        if let Some(certs) = certs {
            self.certs = certs;
        }
        Ok(())
    }
}

/// `:80` (every IPv4 address), `127.0.0.1:8080`, `[::]:443`.
pub(crate) fn listen_addr(text: &str) -> anyhow::Result<SocketAddr> {
    if let Some(port) = text.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| anyhow::anyhow!("`{text}` is not a port"))?;
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    }
    text.parse().map_err(|_| {
        anyhow::anyhow!(
            "`{text}` is not an address to listen on (`:80`, `127.0.0.1:8080`, `[::]:443`)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_overrides_the_defaults() {
        let path = Path::new("/etc/deploy/serve.yml");
        let config = ServeConfig::parse("http: 127.0.0.1:8080\ncerts: /srv/certs\n", path).unwrap();
        assert_eq!(config.http, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.https, "0.0.0.0:443".parse().unwrap());
        assert_eq!(config.certs, Path::new("/srv/certs"));
        assert_eq!(
            ServeConfig::parse("", path).unwrap(),
            ServeConfig::default()
        );
        let typo = ServeConfig::parse("htps: :443\n", path)
            .unwrap_err()
            .to_string();
        assert!(typo.contains("htps"), "{typo}");
        let bad = ServeConfig::parse("https: 443\n", path)
            .unwrap_err()
            .to_string();
        assert!(bad.contains("https: `443` is not an address"), "{bad}");
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(listen_addr(":80").unwrap(), "0.0.0.0:80".parse().unwrap());
        assert_eq!(
            listen_addr("[::]:443").unwrap(),
            "[::]:443".parse().unwrap()
        );
        assert!(listen_addr(":http").is_err());
        assert!(listen_addr("localhost:80").is_err());
    }
}
