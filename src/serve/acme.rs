//! ACME (`acme:` in deploy.yml): certificates for the routed hostnames that no operator
//! certificate covers, obtained and renewed through the HTTP-01 challenge, which the proxy's
//! HTTP listener answers itself.
//!
//! The account's credentials are `ROOT/acme/account.json` and the certificates
//! `ROOT/acme/certs/<hostname>.pem` (key and chain), all mode 0600 in a 0700 folder; the
//! proxy reads that folder after the operator's. Nothing here runs without `acme:`, so
//! nothing contacts an ACME server unless the operator asked for it.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::root::Root;

use super::proxy::Challenges;
use super::proxy::tls::Certs;

/// Renewal starts this long before a certificate expires.
pub(crate) const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How often the certificates are looked at when nothing wakes the task.
const CHECK_EVERY: Duration = Duration::from_secs(12 * 3600);
/// The first retry after a failure; it doubles up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);
/// How long one order may take, challenges and issuance included.
const ORDER_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// `acme:` in deploy.yml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcmeSettings {
    /// The ACME directory URL (Let's Encrypt's is
    /// `https://acme-v02.api.letsencrypt.org/directory`).
    pub(crate) directory: String,
    /// The account's contact, for the CA's expiry warnings.
    pub(crate) email: Option<String>,
    /// A PEM file of the CA that signs the ACME server's own HTTPS certificate, for a
    /// private ACME server; the host's trusted roots otherwise.
    pub(crate) ca_file: Option<PathBuf>,
}

/// Where the account and the certificates live, and what the task needs from the daemon.
pub(crate) struct Acme {
    pub(crate) settings: AcmeSettings,
    /// Its `acme/` folder holds the account and the certificates.
    pub(crate) root: Root,
    pub(crate) certs: Arc<Certs>,
    /// Index of ACME's folder in `certs`: hostnames another folder covers are left alone.
    pub(crate) own: usize,
    pub(crate) challenges: Arc<Challenges>,
    /// The hostnames routed now.
    pub(crate) hosts: Box<dyn Fn() -> Vec<String> + Send + Sync>,
    /// Woken when hostnames are routed (the HTTP listener is open from then on).
    pub(crate) wake: Arc<Notify>,
}

/// Obtains and renews certificates until the daemon stops.
pub(crate) fn start(acme: Acme) {
    tokio::spawn(async move {
        acme.wake.notified().await;
        let mut retry: HashMap<String, (tokio::time::Instant, Duration)> = HashMap::new();
        loop {
            let mut next = tokio::time::Instant::now() + CHECK_EVERY;
            for host in (acme.hosts)() {
                if let Some((at, _)) = retry.get(&host)
                    && *at > tokio::time::Instant::now()
                {
                    next = next.min(*at);
                    continue;
                }
                if !acme.needs(&host) {
                    continue;
                }
                tracing::info!(host, directory = %acme.settings.directory, "requesting a certificate");
                match tokio::time::timeout(ORDER_TIMEOUT, acme.obtain(&host)).await {
                    Ok(Ok(())) => {
                        retry.remove(&host);
                        acme.certs.reload();
                        tracing::info!(host, "certificate obtained");
                    }
                    outcome => {
                        let error = match outcome {
                            Ok(Err(e)) => format!("{e:#}"),
                            _ => format!("no certificate within {}s", ORDER_TIMEOUT.as_secs()),
                        };
                        let wait = retry
                            .get(&host)
                            .map_or(FIRST_BACKOFF, |(_, w)| (*w * 2).min(MAX_BACKOFF));
                        let at = tokio::time::Instant::now() + wait;
                        retry.insert(host.clone(), (at, wait));
                        next = next.min(at);
                        tracing::warn!(host, %error, retry_in_s = wait.as_secs(), "failed to obtain a certificate");
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = acme.wake.notified() => {}
            }
        }
    });
}

impl Acme {
    /// A hostname no other folder covers, whose ACME certificate is missing or expires
    /// within `RENEW_BEFORE`.
    fn needs(&self, host: &str) -> bool {
        let mut other = (0..self.certs.dir_count()).filter(|i| *i != self.own);
        if other.any(|i| self.certs.covers_from(i, host)) {
            return false;
        }
        if !self.certs.covers_from(self.own, host) {
            return true;
        }
        let renew_at = chrono::Utc::now().timestamp() + RENEW_BEFORE.as_secs() as i64;
        self.certs.not_after(host).is_none_or(|end| end <= renew_at)
    }

    async fn obtain(&self, host: &str) -> anyhow::Result<()> {
        let account = self.account().await?;
        let identifiers = [Identifier::Dns(host.to_owned())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .context("failed to place an order")?;
        let mut tokens = Vec::new();
        let answered = self.answer_challenges(&mut order, &mut tokens).await;
        let issued = match answered {
            Ok(()) => issue(&mut order).await,
            Err(e) => Err(e),
        };
        for token in &tokens {
            self.challenges.close(token);
        }
        let pem = issued?;
        write_private(
            &self.root.acme_certs(),
            &format!("{host}.pem"),
            pem.as_bytes(),
        )
    }

    async fn answer_challenges(
        &self,
        order: &mut instant_acme::Order,
        tokens: &mut Vec<String>,
    ) -> anyhow::Result<()> {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.context("failed to read an authorization")?;
            match authorization.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                status => bail!("the authorization is {status:?}"),
            }
            let mut challenge = authorization
                .challenge(ChallengeType::Http01)
                .context("the ACME server offers no HTTP-01 challenge")?;
            let key_authorization = challenge.key_authorization();
            self.challenges
                .open(&challenge.token, key_authorization.as_str());
            tokens.push(challenge.token.clone());
            challenge
                .set_ready()
                .await
                .context("failed to answer the challenge")?;
        }
        Ok(())
    }

    /// The account of `account.json`, or a new one (saved there) when there is none for
    /// this directory URL.
    async fn account(&self) -> anyhow::Result<Account> {
        let path = self.root.acme().join("account.json");
        let builder = || match &self.settings.ca_file {
            Some(ca) => Account::builder_with_root(ca)
                .with_context(|| format!("failed to read `{}`", ca.display())),
            None => Account::builder().context("failed to load the host's trusted roots"),
        };
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(saved) = serde_json::from_str::<Saved>(&text)
            && saved.directory == self.settings.directory
        {
            return (builder()?.from_credentials(saved.credentials))
                .await
                .context("failed to load the ACME account");
        }
        let contact = self.settings.email.as_ref().map(|e| format!("mailto:{e}"));
        let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new = NewAccount {
            contact: &contacts,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = builder()?
            .create(&new, self.settings.directory.clone(), None)
            .await
            .with_context(|| {
                format!(
                    "failed to create an account at `{}`",
                    self.settings.directory
                )
            })?;
        let saved = Saved {
            directory: self.settings.directory.clone(),
            credentials,
        };
        let json = serde_json::to_vec(&saved).context("failed to write the account")?;
        write_private(&self.root.acme(), "account.json", &json)?;
        Ok(account)
    }
}

/// What `account.json` holds.
#[derive(Serialize, Deserialize)]
struct Saved {
    directory: String,
    credentials: AccountCredentials,
}

/// Waits for the order to be ready, then for the certificate: its key and chain as PEM.
async fn issue(order: &mut instant_acme::Order) -> anyhow::Result<String> {
    let retries = RetryPolicy::default();
    let status = order
        .poll_ready(&retries)
        .await
        .context("the order never got ready")?;
    if status != OrderStatus::Ready {
        bail!("the order is {status:?}");
    }
    let key = order
        .finalize()
        .await
        .context("failed to finalize the order")?;
    let chain =
        (order.poll_certificate(&retries).await).context("failed to download the certificate")?;
    Ok(format!("{key}{chain}"))
}

/// Writes `dir/name` whole (through a temporary file renamed into place, so the proxy never
/// reads half of it), mode 0600, in a folder of mode 0700.
fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("failed to create `{}`", dir.display()))?;
    let partial = dir.join(format!(".{name}.partial"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("failed to write `{}`", partial.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("failed to write `{}`", partial.display()))?;
    let path = dir.join(name);
    std::fs::rename(&partial, &path)
        .with_context(|| format!("failed to write `{}`", path.display()))
}

/// The folders the proxy reads certificates from: the operator's, then each root's from
/// ACME (folder 1 + the root's index).
pub(crate) fn cert_dirs(operator: &Path, roots: &[Root]) -> Vec<PathBuf> {
    let acme = roots.iter().map(Root::acme_certs);
    std::iter::once(operator.to_path_buf())
        .chain(acme)
        .collect()
}
