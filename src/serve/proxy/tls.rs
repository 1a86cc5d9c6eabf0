//! HTTPS: the operator's certificates (and those ACME obtained), picked by SNI, and reloaded
//! when their files change.
//!
//! A certificates directory holds one PEM file per hostname, the key and its chain
//! together: `shop.example.com.pem`, or `_wildcard.example.com.pem` for `*.example.com`.
//! Directories are searched in order (the operator's first): an exact name in any of them
//! wins over a wildcard.
//!
//! A file that fails to read or parse is named in the log and its previous version, if any,
//! keeps serving: a file caught half-copied never takes a hostname's HTTPS away.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A PEM file larger than this is not a certificate chain.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// How often the directory is read again for changed files.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The certificates of some directories, by directory and hostname (`*.example.com` for a
/// wildcard).
pub(crate) struct Certs {
    dirs: Vec<PathBuf>,
    loaded: RwLock<HashMap<(usize, String), Loaded>>,
    /// Files that failed to load, as they were then: named in the log once, not at every look.
    rejected: std::sync::Mutex<HashMap<PathBuf, (Option<SystemTime>, u64)>>,
}

struct Loaded {
    key: Arc<CertifiedKey>,
    /// The end of the first certificate's validity, in seconds since the epoch.
    not_after: Option<i64>,
    /// What the file was when it was read: a change of either reads it again.
    modified: Option<SystemTime>,
    len: u64,
}

impl fmt::Debug for Certs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certs").field("dirs", &self.dirs).finish()
    }
}

impl Certs {
    /// Reads `dirs` (a missing directory holds no certificates).
    pub(crate) fn load(dirs: &[PathBuf]) -> Arc<Self> {
        let certs = Arc::new(Self {
            dirs: dirs.to_vec(),
            loaded: RwLock::new(HashMap::new()),
            rejected: std::sync::Mutex::new(HashMap::new()),
        });
        certs.reload();
        certs
    }

    /// Reads files that are new or changed since the last look, and forgets those removed.
    pub(crate) fn reload(&self) {
        let mut seen = Vec::new();
        for (index, dir) in self.dirs.iter().enumerate() {
            match std::fs::read_dir(dir) {
                Ok(entries) => {
                    let entries: Vec<_> = entries.flatten().collect();
                    self.reload_dir(index, entries, &mut seen);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(dir = %dir.display(), %error, "failed to read a certificates directory");
                    // What it held stays until it can be read again.
                    let loaded = self.read();
                    seen.extend(loaded.keys().filter(|(i, _)| *i == index).cloned());
                }
            }
        }
        self.write().retain(|key, _| seen.contains(key));
    }

    fn reload_dir(
        &self,
        index: usize,
        entries: Vec<std::fs::DirEntry>,
        seen: &mut Vec<(usize, String)>,
    ) {
        for entry in entries {
            let path = entry.path();
            let Some(host) = hostname_of(&path) else {
                continue;
            };
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let key = (index, host);
            seen.push(key.clone());
            let modified = meta.modified().ok();
            let unchanged = (self.read().get(&key))
                .is_some_and(|l| l.modified == modified && l.len == meta.len());
            let stat = (modified, meta.len());
            let mut rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
            if unchanged || rejected.get(&path) == Some(&stat) {
                continue;
            }
            rejected.remove(&path);
            match read_pem(&path) {
                Ok(certified) => {
                    tracing::info!(hostname = %key.1, file = %path.display(), "certificate loaded");
                    let loaded = Loaded {
                        not_after: not_after(&certified),
                        key: Arc::new(certified),
                        modified,
                        len: meta.len(),
                    };
                    self.write().insert(key, loaded);
                }
                Err(error) => {
                    rejected.insert(path.clone(), stat);
                    tracing::warn!(file = %path.display(), error = %format!("{error:#}"), "certificate not loaded; the previous one, if any, still serves");
                }
            }
        }
    }

    /// Reloads every `RELOAD_EVERY` while the proxy runs.
    pub(crate) fn watch(self: &Arc<Self>) {
        let certs = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RELOAD_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let certs = Arc::clone(&certs);
                if tokio::task::spawn_blocking(move || certs.reload())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }

    /// Whether a certificate covers `host` (exact, then wildcard).
    pub(crate) fn covers(&self, host: &str) -> bool {
        self.find(host, None).is_some()
    }

    pub(crate) fn dir_count(&self) -> usize {
        self.dirs.len()
    }

    /// Whether a certificate of the directory at `index` covers `host`.
    pub(crate) fn covers_from(&self, index: usize, host: &str) -> bool {
        self.find(host, Some(index)).is_some()
    }

    /// When the certificate that serves `host` expires (seconds since the epoch).
    pub(crate) fn not_after(&self, host: &str) -> Option<i64> {
        self.find(host, None).and_then(|(_, not_after)| not_after)
    }

    /// The certificate for `host` (searching only the directory at `only`, if given), and
    /// the end of its validity.
    fn find(&self, host: &str, only: Option<usize>) -> Option<(Arc<CertifiedKey>, Option<i64>)> {
        let host = host.to_ascii_lowercase();
        let wildcard = host
            .split_once('.')
            .map(|(_, parent)| format!("*.{parent}"));
        let loaded = self.read();
        let indexes: Vec<usize> = match only {
            Some(index) => vec![index],
            None => (0..self.dirs.len()).collect(),
        };
        let names = std::iter::once(host).chain(wildcard);
        names
            .flat_map(|name| indexes.iter().map(move |i| (*i, name.clone())))
            .find_map(|key| loaded.get(&key).map(|l| (Arc::clone(&l.key), l.not_after)))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<(usize, String), Loaded>> {
        self.loaded.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<(usize, String), Loaded>> {
        self.loaded.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.find(hello.server_name()?, None).map(|(key, _)| key)
    }
}

/// The TLS settings of the HTTPS listener: TLS 1.2 and 1.3, a certificate by SNI, HTTP/2
/// offered by ALPN.
pub(crate) fn server_config(certs: Arc<Certs>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `shop.example.com.pem` → `shop.example.com`; `_wildcard.example.com.pem` →
/// `*.example.com`; anything else (other files, names that are no hostname) → `None`.
fn hostname_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?.strip_suffix(".pem")?;
    let host = match name.strip_prefix("_wildcard.") {
        Some(parent) => format!("*.{parent}"),
        None => name.to_owned(),
    };
    let bare = host.strip_prefix("*.").unwrap_or(&host);
    super::is_hostname(bare).then(|| host.to_ascii_lowercase())
}

fn not_after(certified: &CertifiedKey) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(certified.cert.first()?).ok()?;
    Some(cert.validity().not_after.timestamp())
}

fn read_pem(path: &Path) -> anyhow::Result<CertifiedKey> {
    use anyhow::Context;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)?;
    anyhow::ensure!(
        bytes.len() as u64 <= MAX_PEM_BYTES,
        "larger than {MAX_PEM_BYTES} bytes"
    );
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .context("failed to read its certificates")?;
    anyhow::ensure!(!chain.is_empty(), "it holds no certificate");
    let key = PrivateKeyDer::from_pem_slice(&bytes).context("failed to read its private key")?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .context("its private key is of a kind TLS cannot use")?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .context("its private key is not the first certificate's")?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::hostname_of;
    use std::path::Path;

    #[test]
    fn files_are_named_by_hostname() {
        let cases = [
            ("shop.example.com.pem", Some("shop.example.com")),
            ("Shop.Example.com.pem", Some("shop.example.com")),
            ("_wildcard.example.com.pem", Some("*.example.com")),
            ("shop.example.com.key", None),
            ("README", None),
            ("bad name.pem", None),
            (".pem", None),
        ];
        for (file, host) in cases {
            assert_eq!(hostname_of(Path::new(file)).as_deref(), host, "{file}");
        }
    }
}
