//! The hook's side of the hand-off: when `deploy serve` answers on `ROOT/deploy.sock`, the
//! deploy runs there and its events stream back to the pusher's terminal.

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::pipeline::Request;
use crate::report::Reporter;
use crate::root::Root;

use super::protocol::{Ask, Reply};

/// Hands the deploy to the daemon if one answers; `None` means there is none and the caller
/// runs the deploy itself.
pub(crate) async fn hand_off(
    root: &Root,
    request: &Request,
    reporter: &Reporter,
) -> Option<anyhow::Result<()>> {
    let stream = UnixStream::connect(root.socket()).await.ok()?;
    Some(follow(stream, request, reporter).await)
}

async fn follow(stream: UnixStream, request: &Request, reporter: &Reporter) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(&Ask::from_request(request))?;
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
