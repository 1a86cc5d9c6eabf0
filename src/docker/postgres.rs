//! PostgreSQL inside a database's own container, through `docker exec`: its size, a dump
//! (`pg_dump -Fc`) streamed out, a dump streamed in to be checked (`pg_restore --list`) or
//! restored. Running the client tools of the server's own image keeps their versions equal.
//! Nothing is held whole in memory: dumps pass through in the engine's chunks.

use std::pin::Pin;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::DockerError;

/// Who and which database, as the official image's entrypoint reads them (`POSTGRES_USER`,
/// `POSTGRES_DB`, their `_FILE` forms, `postgres` by default); the password too, for a server
/// that asks for one on its local socket.
const LOCATE: &str = r#"
read_var() { eval "v=\${$1:-}"; f=$(eval "printf %s \"\${$1_FILE:-}\""); [ -n "$v" ] || [ -z "$f" ] || v=$(cat "$f"); printf %s "$v"; }
u=$(read_var POSTGRES_USER); u=${u:-postgres}
d=$(read_var POSTGRES_DB); d=${d:-$u}
p=$(read_var POSTGRES_PASSWORD); [ -z "$p" ] || export PGPASSWORD="$p"
command -v pg_dump >/dev/null 2>&1 || { echo "there is no pg_dump in this container: it is not PostgreSQL" >&2; exit 127; }
"#;

/// How much of a command's error output is kept for the message.
const STDERR_LIMIT: usize = 4096;
/// How much of a command's own output is kept when it is not streamed somewhere.
const STDOUT_LIMIT: usize = 64 * 1024;

/// How long a command may go without output before it counts as stuck (the engine or the
/// server stopped answering). A restore prints nothing while it loads a large table, so
/// this is generous; it only keeps a deploy from waiting for ever.
const SILENCE_LIMIT: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, thiserror::Error)]
pub(crate) enum PgError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("{what} failed (exit {code}): {}", .stderr.trim())]
    Failed {
        what: &'static str,
        code: i64,
        stderr: String,
    },
    #[error("failed to {what}: {error}")]
    Io {
        what: &'static str,
        error: std::io::Error,
    },
    #[error("{0}")]
    Unexpected(String),
}

/// The database a service's container serves, and its size on disk.
#[derive(Clone, Debug)]
pub(crate) struct Database {
    pub(crate) name: String,
    pub(crate) size: u64,
}

/// How long a server that does not take connections yet is waited for: the image's
/// entrypoint runs a temporary server while it initialises a new data directory, and a
/// healthcheck can pass against it just before it shuts down.
const CONNECT_WAIT: Duration = Duration::from_secs(60);

/// psql's exit code when it could not connect (or lost the connection).
const PSQL_CONNECTION_FAILED: i64 = 2;

/// The container's database, once its server takes connections (within `CONNECT_WAIT`).
pub(crate) async fn database(docker: &Docker, container: &str) -> Result<Database, PgError> {
    let script = format!(
        r#"{LOCATE} printf '%s\n' "$d"; exec psql -X -q -tA -v ON_ERROR_STOP=1 -U "$u" -d "$d" -c 'SELECT pg_database_size(current_database())'"#
    );
    let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
    let out = loop {
        match exec(
            docker,
            container,
            "read the database's size",
            &script,
            None,
            None,
        )
        .await
        {
            Err(PgError::Failed { code, .. })
                if code == PSQL_CONNECTION_FAILED && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => break other?,
        }
    };
    let mut lines = out.lines();
    let (Some(name), Some(size)) = (lines.next(), lines.next()) else {
        return Err(PgError::Unexpected(format!(
            "psql printed no size: {out:?}"
        )));
    };
    let size = size
        .trim()
        .parse()
        .map_err(|_| PgError::Unexpected(format!("psql printed `{size}` as the size")))?;
    Ok(Database {
        name: name.to_owned(),
        size,
    })
}

/// Streams `pg_dump -Fc` of the container's database into `to`.
pub(crate) async fn dump(
    docker: &Docker,
    container: &str,
    to: &mut (dyn AsyncWrite + Send + Unpin),
) -> Result<(), PgError> {
    let script = format!(r#"{LOCATE} exec pg_dump -Fc --no-password -U "$u" "$d""#);
    exec(docker, container, "pg_dump", &script, None, Some(to)).await?;
    Ok(())
}

/// Reads a dump through `pg_restore`: `--list` reads its table of contents; `full` reads
/// every byte of it as a restore would (to `/dev/null`), so a truncated file fails too.
/// Returns how many entries the table of contents lists.
pub(crate) async fn check(
    docker: &Docker,
    container: &str,
    dump: Pin<Box<dyn AsyncRead + Send>>,
    full: bool,
) -> Result<usize, PgError> {
    let script = if full {
        format!(r#"{LOCATE} exec pg_restore -f /dev/null"#)
    } else {
        format!(r#"{LOCATE} exec pg_restore --list"#)
    };
    let what = if full {
        "pg_restore -f /dev/null"
    } else {
        "pg_restore --list"
    };
    let out = exec(docker, container, what, &script, Some(dump), None).await?;
    // `;     TOC Entries: 4` in the listing's header.
    Ok(out
        .lines()
        .find_map(|l| {
            l.trim_start_matches([';', ' '])
                .strip_prefix("TOC Entries:")
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0))
}

/// Restores a dump into the container's database in one transaction: dropped and created
/// again object by object (`--clean --if-exists`), or, on any error, left as it was.
pub(crate) async fn restore(
    docker: &Docker,
    container: &str,
    dump: Pin<Box<dyn AsyncRead + Send>>,
) -> Result<(), PgError> {
    serving(docker, container).await;
    let script = format!(
        r#"{LOCATE} exec pg_restore --clean --if-exists --single-transaction --exit-on-error --no-password -U "$u" -d "$d""#
    );
    exec(docker, container, "pg_restore", &script, Some(dump), None).await?;
    Ok(())
}

/// Waits (within `CONNECT_WAIT`) until the server takes TCP connections. The temporary
/// server the image's entrypoint runs while it initialises a new data directory (a new
/// preview's, seeded right away) listens on its socket only, and passes the healthcheck
/// just before it shuts down: a restore into it fails half-way. A server configured to take
/// no TCP connections at all is restored into after the wait.
async fn serving(docker: &Docker, container: &str) {
    let deadline = tokio::time::Instant::now() + CONNECT_WAIT;
    let script = "exec pg_isready -q -h 127.0.0.1";
    while exec(docker, container, "pg_isready", script, None, None)
        .await
        .is_err()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `script` with `sh -c` in `container`, feeding it `stdin` and streaming its output
/// into `stdout` (or keeping up to `STDOUT_LIMIT` of it, returned). A non-zero exit is an
/// error carrying the end of its error output.
async fn exec(
    docker: &Docker,
    container: &str,
    what: &'static str,
    script: &str,
    stdin: Option<Pin<Box<dyn AsyncRead + Send>>>,
    stdout: Option<&mut (dyn AsyncWrite + Send + Unpin)>,
) -> Result<String, PgError> {
    let options = CreateExecOptions {
        cmd: Some(vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()]),
        attach_stdin: Some(stdin.is_some()),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        ..Default::default()
    };
    let api = |action: &str, e| DockerError::api(&format!("{action} ({what})"), e);
    let exec = docker
        .create_exec(container, options)
        .await
        .map_err(|e| api("create an exec", e))?;
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = docker
        .start_exec(&exec.id, None)
        .await
        .map_err(|e| api("start an exec", e))?
    else {
        return Err(PgError::Unexpected(format!(
            "{what}: the exec was detached"
        )));
    };
    let feed = async {
        let Some(mut from) = stdin else {
            return Ok(());
        };
        // The command may stop reading early (`--list` reads only the table of contents):
        // a write it refuses is not an error; its exit code says how it went.
        let _ = tokio::io::copy(&mut from, &mut input).await;
        input.shutdown().await
    };
    let collect = collect(&mut output, stdout, what);
    // A command that stops reading early (`--list`) ends before its input does: its output
    // ending is the end, and the rest of the input is not sent.
    let (kept, stderr) = {
        tokio::pin!(feed, collect);
        tokio::select! {
            collected = &mut collect => collected,
            _ = &mut feed => collect.await,
        }
    }?;
    let code = docker
        .inspect_exec(&exec.id)
        .await
        .map_err(|e| api("inspect an exec", e))?
        .exit_code
        .unwrap_or(-1);
    if code != 0 {
        return Err(PgError::Failed {
            what,
            code,
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&kept).into_owned())
}

/// Reads an exec's output to its end: stdout streamed into `stdout` (or, without one, its
/// first `STDOUT_LIMIT` bytes kept), the last `STDERR_LIMIT` bytes of stderr kept.
async fn collect(
    output: &mut (impl futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Unpin),
    mut stdout: Option<&mut (dyn AsyncWrite + Send + Unpin)>,
    what: &'static str,
) -> Result<(Vec<u8>, Vec<u8>), PgError> {
    let written = |error| PgError::Io {
        what: "write the dump",
        error,
    };
    let (mut kept, mut stderr) = (Vec::new(), Vec::new());
    loop {
        let Ok(next) = tokio::time::timeout(SILENCE_LIMIT, output.next()).await else {
            return Err(PgError::Unexpected(format!(
                "{what}: no output for {} minutes; the engine or the database stopped answering",
                SILENCE_LIMIT.as_secs() / 60
            )));
        };
        let Some(chunk) = next else { break };
        let chunk =
            chunk.map_err(|e| DockerError::api(&format!("read an exec's output ({what})"), e))?;
        match chunk {
            LogOutput::StdOut { message } => match stdout.as_mut() {
                Some(to) => to.write_all(&message).await.map_err(written)?,
                None => keep_head(&mut kept, &message, STDOUT_LIMIT),
            },
            LogOutput::StdErr { message } => keep_tail(&mut stderr, &message, STDERR_LIMIT),
            _ => {}
        }
    }
    if let Some(to) = stdout.as_mut() {
        to.flush().await.map_err(written)?;
    }
    Ok((kept, stderr))
}

fn keep_head(kept: &mut Vec<u8>, chunk: &[u8], limit: usize) {
    let room = limit.saturating_sub(kept.len());
    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
}

fn keep_tail(kept: &mut Vec<u8>, chunk: &[u8], limit: usize) {
    kept.extend_from_slice(chunk);
    if kept.len() > limit {
        kept.drain(..kept.len() - limit);
    }
}
