//! The hook's side of the hand-off: when `deploy serve` answers on `ROOT/deploy.sock`, the
//! deploy runs there and its events stream back to the pusher's terminal.

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::pipeline::Request;
use crate::report::Reporter;
use crate::root::Root;

use super::protocol::{Ask, DeployAsk, Reply};

/// Hands the deploy to the daemon if one answers; `None` means there is none and the caller
/// runs the deploy itself. Only "no daemon" falls back: a daemon that is there but cannot
/// be reached (the socket's permissions, say) owns the ports, and a deploy beside it would
/// fight it, so that is an error saying what to fix.
pub(crate) async fn hand_off(
    root: &Root,
    request: &Request,
    reporter: &Reporter,
) -> Option<anyhow::Result<()>> {
    let socket = root.socket();
    match UnixStream::connect(&socket).await {
        Ok(stream) => {
            let ask = Ask::Deploy(DeployAsk::from_request(request));
            Some(follow(stream, &ask, reporter).await)
        }
        Err(e) if no_daemon(e.kind()) => None,
        Err(e) => Some(Err(anyhow::anyhow!(
            "cannot reach `deploy serve` at `{}`: {e}; join the socket's group (the group of `code.git`), or stop the daemon to deploy without it",
            socket.display()
        ))),
    }
}

/// Whether a failed connect means no daemon runs: no socket, or a stale one.
fn no_daemon(kind: std::io::ErrorKind) -> bool {
    matches!(
        kind,
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

/// After `deploy down`: tells a running daemon to route only to what runs now, so the ports
/// of the stack taken down stop pointing at containers that are gone. Nothing to do when no
/// daemon runs.
pub(crate) async fn refresh(root: &Root, reporter: &Reporter) -> anyhow::Result<()> {
    match UnixStream::connect(root.socket()).await {
        Ok(stream) => follow(stream, &Ask::Refresh, reporter).await,
        Err(e) if no_daemon(e.kind()) => Ok(()),
        Err(e) => Err(anyhow::anyhow!(
            "cannot reach `deploy serve` at `{}`: {e}",
            root.socket().display()
        )),
    }
}

async fn follow(stream: UnixStream, ask: &Ask, reporter: &Reporter) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(ask)?;
    line.push('\n');
    // A daemon that refuses the connection (too many from this user, say) may answer and
    // hang up before the request is written: its answer says why, so read it either way.
    let sent = write
        .write_all(line.as_bytes())
        .await
        .context("failed to send the deploy to `deploy serve`");
    let mut lines = BufReader::new(read).lines();
    loop {
        let next = lines.next_line().await;
        if next.is_err() && sent.is_err() {
            return sent;
        }
        let Some(line) = next.context("lost `deploy serve` while it deployed")? else {
            break;
        };
        match serde_json::from_str::<Reply>(&line)
            .context("`deploy serve` sent something unreadable")?
        {
            Reply::Queued { ahead } => {
                reporter.info(format!("queued in `deploy serve` behind {ahead} deploy(s)"));
            }
            Reply::Event(event) => reporter.emit(event),
            Reply::Done { ok: true, message } => {
                if let Some(m) = message {
                    reporter.info(m);
                }
                return Ok(());
            }
            Reply::Done { ok: false, message } => {
                bail!(
                    "{}",
                    message.unwrap_or_else(|| "the deploy failed".to_owned())
                )
            }
        }
    }
    sent?;
    bail!(
        "`deploy serve` stopped before the deploy finished; `deploy logs --follow` shows where it is"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15: a permission error on the socket fell back to an in-process deploy while
    /// the daemon owned the ports.
    #[test]
    fn issue15_only_a_missing_daemon_falls_back() {
        assert!(no_daemon(std::io::ErrorKind::NotFound));
        assert!(no_daemon(std::io::ErrorKind::ConnectionRefused));
        assert!(!no_daemon(std::io::ErrorKind::PermissionDenied));
    }
}
