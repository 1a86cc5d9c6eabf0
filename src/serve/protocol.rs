//! What travels over `ROOT/deploy.sock`: one JSON request per connection, then the deploy's
//! events and its outcome, one JSON object per line. A request line is bounded
//! (`MAX_REQUEST_LINE`), and read without holding more than that in memory.

use std::collections::BTreeMap;
use std::io;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

use crate::identity::Pusher;
use crate::ids::{EnvName, Revision};
use crate::ledger::Trigger;
use crate::pipeline::{Request, Target};
use crate::report::Event;

/// What a client asks of the daemon: a deploy of a revision already in the repo, or that it
/// route only to what runs (after `deploy down`). The socket offers nothing else.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Ask {
    Deploy(DeployAsk),
    /// The stack changed outside a deploy: route only to the containers that run now.
    Refresh,
}

/// A deploy asked of the daemon.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DeployAsk {
    /// The pushed commit and ref, or `None` with `expression` for `deploy --revision`.
    pushed: Option<(Revision, String)>,
    expression: Option<String>,
    /// The pusher's name as the client claims it; believed only from a peer that may
    /// vouch for others (`identity`).
    user: String,
    trigger: Trigger,
    /// Dumps to restore (service → file name in `ROOT/backups`); only root and the owner
    /// of `code.git` may ask for that.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    restore: BTreeMap<String, String>,
    /// The environment to deploy (a client from before environments asks for production).
    #[serde(default = "EnvName::production")]
    env: EnvName,
}

/// What the daemon sends back while and after it works.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// Waiting behind other deploys.
    Queued {
        ahead: usize,
    },
    Event(Event),
    /// The end: the deploy's outcome. `message` says why it failed or was skipped.
    Done {
        ok: bool,
        message: Option<String>,
    },
}

impl DeployAsk {
    pub(crate) fn from_request(request: &Request) -> Self {
        let (pushed, expression) = match &request.target {
            Target::Pushed { revision, refname } => {
                (Some((revision.clone(), refname.clone())), None)
            }
            Target::Expression(e) => (None, e.clone()),
        };
        Self {
            pushed,
            expression,
            user: request.user.to_string(),
            trigger: request.trigger,
            restore: request.restore.clone(),
            env: request.env.clone(),
        }
    }

    /// The pusher's name the client claims.
    pub(crate) fn claimed_user(&self) -> &str {
        &self.user
    }

    /// The request, on behalf of `pusher`: who the daemon decided asked, from the claim and
    /// the peer's uid.
    pub(crate) fn into_request(self, pusher: Pusher) -> Request {
        let Self {
            pushed,
            expression,
            user: _,
            trigger,
            restore,
            env,
        } = self;
        let target = match pushed {
            Some((revision, refname)) => Target::Pushed { revision, refname },
            None => Target::Expression(expression),
        };
        Request {
            target,
            user: pusher.name,
            uid: pusher.uid,
            trigger,
            restore,
            queued: None,
            env,
        }
    }
}

/// The longest request line the control socket reads. A request is a revision, a ref name
/// and a user name: a few hundred bytes.
pub(crate) const MAX_REQUEST_LINE: usize = 64 * 1024;

/// Why no request line could be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LineError {
    #[error("the request is longer than {} KiB", .limit / 1024)]
    TooLong { limit: usize },
    /// The cause is in the message, not a `source`, so the error chain prints it once.
    #[error("failed to read the request: {0}")]
    Io(io::Error),
}

/// Reads one line of at most `limit` bytes (without its `\n`), holding no more than `limit`
/// bytes plus the reader's buffer however long the line is. `Ok(None)` at the end of the
/// stream before any byte; a last line without `\n` is returned as it is.
pub(crate) async fn read_line<R>(reader: &mut R, limit: usize) -> Result<Option<Vec<u8>>, LineError>
where
    R: AsyncBufRead + Unpin,
{
    let mut line = Vec::new();
    loop {
        let buf = reader.fill_buf().await.map_err(LineError::Io)?;
        if buf.is_empty() {
            return Ok((!line.is_empty()).then_some(line));
        }
        let (part, used, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(newline) => (&buf[..newline], newline + 1, true),
            None => (buf, buf.len(), false),
        };
        if line.len() + part.len() > limit {
            return Err(LineError::TooLong { limit });
        }
        line.extend_from_slice(part);
        reader.consume(used);
        if complete {
            return Ok(Some(line));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncReadExt, BufReader, ReadBuf};

    use super::*;

    async fn read(input: &[u8], limit: usize) -> Result<Option<String>, LineError> {
        let mut reader = BufReader::with_capacity(4, input);
        let line = read_line(&mut reader, limit).await?;
        Ok(line.map(|l| String::from_utf8(l).unwrap()))
    }

    #[tokio::test]
    async fn a_line_up_to_the_limit_is_read_and_one_byte_more_is_refused() {
        assert_eq!(
            read(b"abcdefgh\n", 8).await.unwrap().as_deref(),
            Some("abcdefgh")
        );
        let err = read(b"abcdefghi\n", 8).await.unwrap_err();
        assert!(matches!(err, LineError::TooLong { limit: 8 }), "{err}");
        let err = read(b"abcdefghi", 8).await.unwrap_err();
        assert!(matches!(err, LineError::TooLong { limit: 8 }), "{err}");
        assert_eq!(
            LineError::TooLong {
                limit: MAX_REQUEST_LINE
            }
            .to_string(),
            "the request is longer than 64 KiB"
        );
    }

    #[tokio::test]
    async fn the_end_of_the_stream_ends_a_line() {
        assert_eq!(read(b"", 8).await.unwrap(), None);
        assert_eq!(read(b"abc", 8).await.unwrap().as_deref(), Some("abc"));
        assert_eq!(read(b"\n", 8).await.unwrap().as_deref(), Some(""));
    }

    #[tokio::test]
    async fn what_follows_the_line_stays_in_the_reader() {
        let mut reader = BufReader::with_capacity(4, &b"one\ntwo\nthree"[..]);
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut reader, 8).await.unwrap() {
            lines.push(String::from_utf8(line).unwrap());
        }
        assert_eq!(lines, ["one", "two", "three"]);
    }

    /// An endless stream without a newline, counting what was read from it.
    struct Endless(Arc<AtomicUsize>);

    impl AsyncRead for Endless {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let n = buf.remaining();
            buf.put_slice(&vec![b'a'; n]);
            self.0.fetch_add(n, Ordering::SeqCst);
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn an_endless_line_is_refused_after_reading_little_more_than_the_limit() {
        let read_bytes = Arc::new(AtomicUsize::new(0));
        let mut reader = BufReader::with_capacity(8192, Endless(read_bytes.clone()));
        let err = read_line(&mut reader, MAX_REQUEST_LINE).await.unwrap_err();
        assert!(matches!(err, LineError::TooLong { .. }), "{err}");
        let read_bytes = read_bytes.load(Ordering::SeqCst);
        assert!(
            read_bytes <= MAX_REQUEST_LINE + 8192,
            "read {read_bytes} bytes for a {MAX_REQUEST_LINE}-byte limit"
        );
        // The reader is left usable (what it buffered is still there).
        let mut more = [0; 1];
        reader.read_exact(&mut more).await.unwrap();
    }

    #[test]
    fn a_request_carries_the_decided_pusher_not_the_claim() {
        let ask = DeployAsk {
            pushed: None,
            expression: Some("main~1".to_owned()),
            user: "alice-the-admin".to_owned(),
            trigger: Trigger::Rollback,
            restore: Default::default(),
            env: EnvName::production(),
        };
        assert_eq!(ask.claimed_user(), "alice-the-admin");
        let pusher = Pusher {
            name: crate::ids::UserName::sanitize("mallory"),
            uid: 1000,
        };
        let request = ask.into_request(pusher);
        assert_eq!((request.user.as_str(), request.uid), ("mallory", 1000));
        assert!(matches!(request.target, Target::Expression(Some(e)) if e == "main~1"));
    }
}
