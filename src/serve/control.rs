//! The control socket `ROOT/deploy.sock`: clients are admitted within caps, each sends one
//! bounded request within a time limit, the peer's uid (`SO_PEERCRED`) decides whose name the
//! deploy is recorded under, and the deploy's lines stream back.
//!
//! Whatever a client does, it costs the daemon a bounded amount: one connection slot of its
//! uid's few, at most `MAX_REQUEST_LINE` bytes of request, `REQUEST_TIMEOUT` of waiting for
//! it, and `WRITE_TIMEOUT` of waiting for it to read. A refused client gets one error line
//! (`Reply::Done` with `ok: false`) and the connection is closed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::identity;

use super::admission::{Admission, Ticket};
use super::daemon::{Daemon, Job};
use super::protocol::{self, Ask, MAX_REQUEST_LINE, Reply};
use super::proxy::backoff::{AcceptBackoff, LOG_EVERY, Throttle};

/// How long a client has, from its connection, to send its whole request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one reply line may wait for the client to read. A client that stops reading is
/// detached; the deploy goes on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Accepts clients for ever. Failing accepts (out of descriptors) back off, and refused
/// clients are logged a line at a time with a count, never a line each.
pub(super) async fn serve(listener: UnixListener, daemon: Arc<Daemon>) {
    let admission = Admission::default();
    let refusals = Arc::new(Mutex::new(Throttle::new(LOG_EVERY)));
    let mut backoff = AcceptBackoff::default();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff.succeeded();
                let (daemon, admission, refusals) =
                    (daemon.clone(), admission.clone(), refusals.clone());
                tokio::spawn(async move {
                    if let Err(e) = client(daemon, &admission, stream).await {
                        let mut refusals = refusals.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(unlogged) = refusals.hit(Instant::now()) {
                            tracing::warn!(error = %format!("{e:#}"), unlogged, "refused a client of the control socket");
                        }
                    }
                });
            }
            Err(error) => {
                let pause = backoff.failed(Instant::now());
                if let Some(unlogged) = pause.log {
                    tracing::warn!(%error, unlogged, "failed to accept on the control socket; backing off");
                }
                tokio::time::sleep(pause.wait).await;
            }
        }
    }
}

/// One client: admit it, read its request, queue it, stream its deploy back. An `Err` is a
/// client refused (and told why); a deploy's failure is a reply, not an error.
async fn client(
    daemon: Arc<Daemon>,
    admission: &Admission,
    stream: UnixStream,
) -> anyhow::Result<()> {
    let uid = stream
        .peer_cred()
        .context("failed to read the peer's credentials")?
        .uid();
    let (read, mut write) = stream.into_split();
    let _ticket: Ticket = match admission.admit(uid) {
        Ok(ticket) => ticket,
        Err(refused) => return refuse(&mut write, refused.into()).await,
    };
    let mut reader = BufReader::new(read);
    let line = match tokio::time::timeout(
        REQUEST_TIMEOUT,
        protocol::read_line(&mut reader, MAX_REQUEST_LINE),
    )
    .await
    {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => return refuse(&mut write, e.into()).await,
        Err(_elapsed) => {
            let e = anyhow::anyhow!("no request within {}s", REQUEST_TIMEOUT.as_secs());
            return refuse(&mut write, e).await;
        }
    };
    let ask = match serde_json::from_slice(&line) {
        Ok(Ask::Deploy(ask)) => ask,
        Ok(Ask::Refresh) => {
            // Harmless to anyone who may connect: the proxy only follows what runs.
            let done = daemon.refresh().await;
            let (replies, outgoing) = mpsc::unbounded_channel();
            let _ = replies.send(Reply::Done {
                ok: done.is_ok(),
                message: done.err().map(|e| format!("{e:#}")),
            });
            return stream_replies(outgoing, &mut write).await;
        }
        Err(e) => {
            let e = anyhow::anyhow!("unreadable request on the control socket: {e}");
            return refuse(&mut write, e).await;
        }
    };
    let (root, claim) = (daemon.root.clone(), ask.claimed_user().to_owned());
    let pusher =
        tokio::task::spawn_blocking(move || identity::pusher(&root, Some(&claim), uid)).await?;
    let request = ask.into_request(pusher);
    // A restore throws away what was written since the dump: only those who could run it
    // without the daemon (root, the owner of `code.git`) may ask for one.
    if !request.restore.is_empty()
        && !identity::may_vouch(uid, identity::repo_owner(&daemon.root))
        && uid != nix::unistd::geteuid().as_raw()
    {
        let e = anyhow::anyhow!(
            "restoring a database is for root and the owner of `code.git`; uid {uid} may only deploy revisions"
        );
        return refuse(&mut write, e).await;
    }
    let (replies, outgoing) = mpsc::unbounded_channel();
    daemon.enqueue(Job { request, replies }).await;
    stream_replies(outgoing, &mut write).await
}

/// Sends the deploy's lines until its outcome. The deploy goes on whether or not anyone
/// reads: a pusher who hangs up, or stops reading, only stops getting lines.
async fn stream_replies(
    mut outgoing: mpsc::UnboundedReceiver<Reply>,
    write: &mut OwnedWriteHalf,
) -> anyhow::Result<()> {
    while let Some(reply) = outgoing.recv().await {
        let mut text = serde_json::to_string(&reply)?;
        text.push('\n');
        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(text.as_bytes())).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => break,
        }
    }
    Ok(())
}

/// Tells the client why it is refused, in the one line it reads, then closes.
async fn refuse(write: &mut OwnedWriteHalf, why: anyhow::Error) -> anyhow::Result<()> {
    let reply = Reply::Done {
        ok: false,
        message: Some(format!("{why:#}")),
    };
    let mut text = serde_json::to_string(&reply)?;
    text.push('\n');
    // Best effort: the client may be gone, or not reading.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        write.write_all(text.as_bytes()).await?;
        write.shutdown().await
    })
    .await;
    Err(why)
}
