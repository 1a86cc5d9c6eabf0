//! Notifications of a deploy's events (`notify:` in deploy.yml): a webhook (a signed JSON
//! POST) or a command (the same JSON on its stdin).
//!
//! A deploy only records each event in the ledger and starts a deliverer: a process of its
//! own (`deploy deliver-notifications`), so that a receiver that fails or hangs never fails,
//! delays or blocks a deploy, and the deliveries outlive the push (and a daemon restart: the
//! daemon starts one for what is left). One deliverer runs per ROOT (`ROOT/notify.lock`); it
//! retries with back-off for up to `GIVE_UP_AFTER`, then records the failure for
//! `deploy status`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::root::Root;

/// How long an event is retried before it is given up.
pub(crate) const GIVE_UP_AFTER: Duration = Duration::from_secs(10 * 60);

/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The events a deploy notifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Event {
    Started,
    Succeeded,
    Failed,
    Canceled,
}

impl Event {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }
}

/// One `notify:` entry, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawTarget")]
pub(crate) struct Target {
    pub(crate) to: Receiver,
    /// The events it wants; every event when not given.
    pub(crate) events: Vec<Event>,
}

/// Where an event goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Receiver {
    /// An `http://` or `https://` URL, with the file (relative to ROOT) whose contents sign
    /// the body.
    Url {
        url: String,
        secret_file: Option<PathBuf>,
    },
    /// A program and its arguments, run without a shell.
    Command { command: Vec<String> },
}

/// As `deploy status` names it: the URL, or the command.
impl std::fmt::Display for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Url { url, .. } => f.write_str(url),
            Self::Command { command } => write!(f, "`{}`", command.join(" ")),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    url: Option<String>,
    command: Option<Vec<String>>,
    secret_file: Option<PathBuf>,
    events: Option<Vec<Event>>,
}

impl TryFrom<RawTarget> for Target {
    type Error = String;

    fn try_from(raw: RawTarget) -> Result<Self, String> {
        let to = match (raw.url, raw.command) {
            (Some(url), None) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!("`{url}` is not an http:// or https:// URL"));
                }
                url.parse::<hyper::Uri>()
                    .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
                Receiver::Url {
                    url,
                    secret_file: raw.secret_file,
                }
            }
            (None, Some(_)) if raw.secret_file.is_some() => {
                return Err("`secret_file` signs a webhook's body; a command has none".to_owned());
            }
            (None, Some(command)) if command.is_empty() => {
                return Err("`command` names no program".to_owned());
            }
            (None, Some(command)) => Receiver::Command { command },
            (Some(_), Some(_)) => {
                return Err("an entry has either `url` or `command`, not both".to_owned());
            }
            (None, None) => return Err("an entry needs `url` or `command`".to_owned()),
        };
        let events = raw.events.unwrap_or_else(|| {
            vec![
                Event::Started,
                Event::Succeeded,
                Event::Failed,
                Event::Canceled,
            ]
        });
        Ok(Self { to, events })
    }
}

/// What every receiver gets, as JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Payload {
    pub(crate) event: Event,
    pub(crate) project: String,
    pub(crate) environment: String,
    pub(crate) revision: String,
    /// The commit's subject line.
    pub(crate) message: String,
    pub(crate) user: String,
    pub(crate) deployment_id: i64,
    pub(crate) started_at: chrono::DateTime<chrono::Utc>,
    pub(crate) finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub(crate) log: PathBuf,
    /// Why it failed or who canceled it.
    pub(crate) error: Option<String>,
    /// Where the environment answers, once it has a hostname.
    pub(crate) url: Option<String>,
}

/// Records `payload` for every target that wants its event, then makes sure a deliverer
/// runs. Never fails the deploy: a problem is a warning.
pub(crate) async fn queue(
    root: &Root,
    ledger: &crate::ledger::Ledger,
    targets: &[Target],
    payload: &Payload,
    reporter: &crate::report::Reporter,
) {
    let wanted: Vec<&Target> = targets
        .iter()
        .filter(|t| t.events.contains(&payload.event))
        .collect();
    if wanted.is_empty() {
        return;
    }
    let body = serde_json::to_string(payload).expect("a payload always serializes");
    for target in wanted {
        let receiver = serde_json::to_string(&target.to).expect("a receiver always serializes");
        let queued = ledger
            .queue_notification(
                crate::ids::DeploymentId(payload.deployment_id),
                &receiver,
                payload.event.as_str(),
                &body,
            )
            .await;
        if let Err(e) = queued {
            reporter.warn(format!("notify: {e:#}"));
        }
    }
    if let Err(e) = start_deliverer(root) {
        reporter.warn(format!("notify: {e:#}"));
    }
}

/// Starts `deploy deliver-notifications` for `root` in a session of its own, detached from
/// this process (and from the pusher's terminal).
pub(crate) fn start_deliverer(root: &Root) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let exe =
        std::env::current_exe().context("failed to find this program to deliver notifications")?;
    std::process::Command::new(exe)
        .arg("deliver-notifications")
        .arg("--root")
        .arg(root.path())
        .args(["--env", root.env().as_str()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .context("failed to start delivering notifications")?;
    Ok(())
}

/// Sends one event to one receiver: `Ok` once it accepted it.
pub(crate) async fn send(root: &Root, receiver: &Receiver, body: &str) -> anyhow::Result<()> {
    let attempt = async {
        match receiver {
            Receiver::Url { url, secret_file } => {
                let secret = match secret_file {
                    Some(file) => Some(read_secret(root, file)?),
                    None => None,
                };
                post(url, body, secret.as_deref()).await
            }
            Receiver::Command { command } => run(command, body).await,
        }
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, attempt)
        .await
        .map_err(|_| anyhow!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs()))?
}

fn read_secret(root: &Root, file: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let path = root.path().join(file);
    let text = std::fs::read(&path)
        .with_context(|| format!("failed to read the secret file `{}`", path.display()))?;
    Ok(text.trim_ascii().to_vec())
}

/// `sha256=<hex>`: HMAC-SHA256 of the body, as GitHub signs its webhooks.
pub(crate) fn signature(secret: &[u8], body: &str) -> String {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes a key of any size");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

async fn post(url: &str, body: &str, secret: Option<&[u8]>) -> anyhow::Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let uri: hyper::Uri = url
        .parse()
        .with_context(|| format!("`{url}` is not a URL"))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .ok_or_else(|| anyhow!("`{url}` names no host"))?
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    let mut request = hyper::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            "Host",
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        )
        .header("Content-Type", "application/json")
        .header("User-Agent", concat!("deploy/", env!("CARGO_PKG_VERSION")));
    if let Some(secret) = secret {
        request = request.header("X-Deploy-Signature", signature(secret, body));
    }
    let request = request.body(Full::new(Bytes::from(body.to_owned())))?;
    let status = if https {
        let tls = tls::connect(&host, tcp).await?;
        exchange(hyper_util::rt::TokioIo::new(tls), request).await?
    } else {
        exchange(hyper_util::rt::TokioIo::new(tcp), request).await?
    };
    if !status.is_success() {
        bail!("answered {status}");
    }
    Ok(())
}

/// One request on a new connection; only the answer's status counts, its body is not read.
async fn exchange<S>(
    io: S,
    request: hyper::Request<http_body_util::Full<hyper::body::Bytes>>,
) -> anyhow::Result<hyper::StatusCode>
where
    S: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let driving = tokio::spawn(connection);
    let status = sender.send_request(request).await.map(|r| r.status());
    driving.abort();
    Ok(status?)
}

async fn run(command: &[String], body: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let (program, args) = command.split_first().ok_or_else(|| anyhow!("no program"))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run `{program}`"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input still counts by its exit status.
        let _ = stdin.write_all(body.as_bytes()).await;
    }
    let status = child.wait().await?;
    if !status.success() {
        bail!("`{program}` exited with {status}");
    }
    Ok(())
}

mod tls {
    //! HTTPS for webhooks: rustls, with the host's trusted certificates.

    use std::sync::{Arc, OnceLock};

    use anyhow::{Context, anyhow};

    fn config() -> anyhow::Result<Arc<rustls::ClientConfig>> {
        static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
        if let Some(config) = CONFIG.get() {
            return Ok(config.clone());
        }
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(anyhow!(
                "no trusted certificates found on this host (install `ca-certificates`)"
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS setup")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(CONFIG.get_or_init(|| Arc::new(config)).clone())
    }

    pub(super) async fn connect(
        host: &str,
        tcp: tokio::net::TcpStream,
    ) -> anyhow::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| anyhow!("`{host}` is not a TLS server name: {e}"))?;
        tokio_rustls::TlsConnector::from(config()?)
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with {host} failed"))
    }
}

/// Delivers what is pending for `root` until each notification is delivered or given up.
/// One deliverer works per ROOT; another one started meanwhile leaves at once.
pub(crate) async fn deliver(root: &Root) -> anyhow::Result<()> {
    let ledger = crate::ledger::Ledger::open(&root.ledger_file()).await?;
    loop {
        let lock = crate::pipeline::lock::try_acquire(
            &root.notify_lock(),
            "deploy deliver-notifications",
        )?;
        let Some(_lock) = lock else {
            return Ok(());
        };
        while let Some(due) = ledger.next_notification_due().await? {
            let wait = (due - chrono::Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            // A ROOT removed meanwhile has nobody left to notify.
            if !root.ledger_file().exists() {
                return Ok(());
            }
            for pending in ledger.due_notifications().await? {
                attempt(root, &ledger, &pending).await?;
            }
        }
        drop(_lock);
        // One queued while the lock was let go found it taken, and its deliverer left.
        if ledger.next_notification_due().await?.is_none() {
            return Ok(());
        }
    }
}

async fn attempt(
    root: &Root,
    ledger: &crate::ledger::Ledger,
    pending: &crate::ledger::Pending,
) -> anyhow::Result<()> {
    let sent = match serde_json::from_str::<Receiver>(&pending.receiver) {
        Ok(receiver) => send(root, &receiver, &pending.body).await,
        Err(e) => Err(anyhow!("the recorded receiver cannot be read: {e}")),
    };
    match sent {
        Ok(()) => ledger.notification_delivered(pending.id).await?,
        Err(e) => {
            let retry = backoff(pending.attempts);
            let age = (chrono::Utc::now() - pending.queued_at)
                .to_std()
                .unwrap_or_default();
            let retry = (age + retry <= GIVE_UP_AFTER).then_some(retry);
            ledger
                .notification_failed(pending.id, &format!("{e:#}"), retry)
                .await?;
        }
    }
    Ok(())
}

/// The wait before attempt `n` (1-based) of an event: 2 s, doubling, at most a minute.
pub(crate) fn backoff(attempts: u32) -> Duration {
    Duration::from_secs((2u64 << attempts.min(5)).min(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(yaml: &str) -> Result<Vec<Target>, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn entries_are_a_url_or_a_command() {
        let t = targets(
            "- url: https://hooks.example.com/deploy\n  events: [failed]\n  secret_file: notify.secret\n- command: [/usr/local/bin/page-oncall]\n",
        )
        .unwrap();
        assert_eq!(t[0].events, [Event::Failed]);
        assert!(matches!(
            &t[0].to,
            Receiver::Url {
                secret_file: Some(_),
                ..
            }
        ));
        assert_eq!(t[1].events.len(), 4, "every event by default");
        for (yaml, why) in [
            ("- events: [failed]\n", "an entry needs `url` or `command`"),
            ("- url: ftp://x\n", "is not an http:// or https:// URL"),
            ("- url: http://x\n  command: [y]\n", "not both"),
            ("- command: []\n", "names no program"),
            (
                "- url: http://x\n  events: [exploded]\n",
                "unknown variant `exploded`",
            ),
        ] {
            let e = targets(yaml).unwrap_err();
            assert!(e.contains(why), "{yaml}: {e}");
        }
    }

    /// The signature a receiver checks, as `openssl dgst -sha256 -hmac` computes it.
    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        assert_eq!(
            signature(b"key", "The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn retries_back_off_to_a_minute() {
        let waits: Vec<u64> = (0..8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
