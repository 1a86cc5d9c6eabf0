//! The read-only dashboard of `deploy serve` (`dashboard: {listen: …}` in deploy.yml): the
//! live revision, the containers, the history, and a deploy's build log, streamed live over
//! Server-Sent Events while it runs. Plain HTML with a little JavaScript, nothing fetched
//! from elsewhere.
//!
//! Access needs the token in `ROOT/dashboard.token` (made by `deploy init`, mode 0600): as
//! `Authorization: Bearer TOKEN`, or typed once into the login form, which sets an HttpOnly,
//! SameSite cookie. The build logs it shows were redacted when they were written.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::ids::DeploymentId;
use crate::ledger::{Deployment, Ledger, Status};
use crate::root::Root;
use crate::settings::Settings;

/// `dashboard:` in deploy.yml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DashboardSettings {
    /// Where it listens: keep it on loopback, or behind the host-wide proxy.
    pub(crate) listen: SocketAddr,
}

/// The cookie the login form sets.
const COOKIE: &str = "deploy_dashboard";

/// How often a live log or the page's watch looks for something new.
const POLL: Duration = Duration::from_millis(250);

/// The most of a build log a page shows: its end.
const MAX_LOG: u64 = 2 << 20;

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Reads the token: the file must exist and be readable by its owner only.
pub(crate) fn read_token(root: &Root) -> anyhow::Result<String> {
    let path = root.dashboard_token();
    let meta = std::fs::metadata(&path).with_context(|| {
        format!(
            "`{}` is missing; `deploy init {}` makes it",
            path.display(),
            root.path().display()
        )
    })?;
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "`{}` may be read by others (mode {:o}); `chmod 600` it",
            path.display(),
            meta.permissions().mode() & 0o777
        );
    }
    let token = std::fs::read_to_string(&path)?.trim().to_owned();
    if token.len() < 16 {
        bail!(
            "`{}` holds no token of at least 16 characters",
            path.display()
        );
    }
    Ok(token)
}

/// Makes `ROOT/dashboard.token` (mode 0600) unless it exists.
pub(crate) fn make_token(root: &Root) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let path = root.dashboard_token();
    if path.exists() {
        return Ok(());
    }
    let mut random = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .context("failed to read /dev/urandom")?;
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("failed to create `{}`", path.display()))?;
    writeln!(file, "{token}").with_context(|| format!("failed to write `{}`", path.display()))
}

struct Dashboard {
    root: Root,
    settings: Settings,
    token: String,
    /// Opened once: the handlers run on spawned tasks.
    ledger: Ledger,
}

/// Serves the dashboard until the daemon stops. A bad token file is refused with its reason
/// before anything listens.
pub(crate) async fn start(
    root: Root,
    settings: Settings,
    proxy: &super::proxy::Proxy,
) -> anyhow::Result<()> {
    let Some(config) = settings.dashboard.clone() else {
        return Ok(());
    };
    let token = read_token(&root).context("the dashboard is not started")?;
    // Through the proxy, so that an upgrade hands it to the next daemon with the others.
    let listener = (proxy.bind_other(config.listen))
        .with_context(|| format!("the dashboard cannot listen on {}", config.listen))?;
    tracing::info!(listen = %config.listen, "dashboard");
    let dashboard = Arc::new(Dashboard {
        ledger: Ledger::open(&root.ledger_file()).await?,
        root,
        settings,
        token,
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let dashboard = dashboard.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let dashboard = dashboard.clone();
                    async move { Ok::<_, Infallible>(dashboard.handle(request).await) }
                });
                // A client has 10 s to send a request's head, as on the proxy's ports.
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(())
}

impl Dashboard {
    async fn handle(&self, request: Request<Incoming>) -> Response<Body> {
        let path = request.uri().path().to_owned();
        if path == "/login" {
            return self.login(request).await;
        }
        if !self.authorized(&request) {
            return page(StatusCode::UNAUTHORIZED, "Sign in", &login_form(None));
        }
        let answer = match (request.method(), path.as_str()) {
            (&Method::GET, "/") => self.index().await,
            (&Method::GET, "/events") => Ok(self.watch()),
            (&Method::GET, "/api/status") => self.api_status().await,
            (&Method::GET, "/api/deploys") => self.api_deploys().await,
            (&Method::GET, p) => match deploy_path(p) {
                Some((id, "")) => self.log_page(id).await,
                Some((id, "/stream")) => self.log_stream(id).await,
                _ => Ok(page(
                    StatusCode::NOT_FOUND,
                    "Not found",
                    "<p>No such page.</p>",
                )),
            },
            _ => Ok(page(
                StatusCode::METHOD_NOT_ALLOWED,
                "Read only",
                "<p>This dashboard only shows.</p>",
            )),
        };
        answer.unwrap_or_else(|e| {
            page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Error",
                &format!("<p>{}</p>", escape(&format!("{e:#}"))),
            )
        })
    }

    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let bearer = (request.headers().get(header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = (request.headers().get_all(header::COOKIE).iter())
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| {
                c.trim()
                    .strip_prefix(&format!("{COOKIE}="))
                    .map(str::to_owned)
            });
        let given = bearer.map(str::to_owned).or(cookie);
        given.is_some_and(|t| same(t.trim().as_bytes(), self.token.as_bytes()))
    }

    /// The form, or its answer: the cookie and the way home, or the form again.
    async fn login(&self, request: Request<Incoming>) -> Response<Body> {
        if request.method() != Method::POST {
            return page(StatusCode::OK, "Sign in", &login_form(None));
        }
        let body = match http_body_util::Limited::new(request.into_body(), 4096)
            .collect()
            .await
        {
            Ok(body) => body.to_bytes(),
            Err(_) => return page(StatusCode::PAYLOAD_TOO_LARGE, "Sign in", &login_form(None)),
        };
        let token = String::from_utf8_lossy(&body)
            .split('&')
            .find_map(|pair| pair.strip_prefix("token=").map(form_decode))
            .unwrap_or_default();
        if !same(token.trim().as_bytes(), self.token.as_bytes()) {
            return page(
                StatusCode::UNAUTHORIZED,
                "Sign in",
                &login_form(Some("That is not the token in dashboard.token.")),
            );
        }
        let cookie = format!(
            "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
            token.trim()
        );
        Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, "/")
            .header(header::SET_COOKIE, cookie)
            .body(full(""))
            .expect("a valid response")
    }

    async fn api_status(&self) -> anyhow::Result<Response<Body>> {
        let status = crate::cli::status::gather(&self.root, &self.settings, &self.ledger).await?;
        Ok(json(&status))
    }

    async fn api_deploys(&self) -> anyhow::Result<Response<Body>> {
        Ok(json(&self.ledger.history(100).await?))
    }

    async fn index(&self) -> anyhow::Result<Response<Body>> {
        let status = crate::cli::status::gather(&self.root, &self.settings, &self.ledger).await?;
        let history = self.ledger.history(50).await?;
        let mut html = String::new();
        let _ = write!(html, "<h1>{}</h1>", escape(&status.project));
        match &status.live {
            Some(live) => {
                let message =
                    crate::pipeline::record::commit_subject(&self.root, &live.revision).await;
                let _ = write!(
                    html,
                    "<p class=live>Live: <code>{}</code> {} — deployed by {} at {}</p>",
                    live.revision.short(),
                    escape(&message),
                    escape(&live.user),
                    local(live.finished_at.unwrap_or(live.started_at))
                );
            }
            None => html.push_str("<p class=live>Nothing deployed yet.</p>"),
        }
        if let Some(running) = &status.running {
            let _ = write!(
                html,
                "<p class=running>Deploying <a href=\"/deploys/{id}\">{rev}</a> for {user}: {stage}</p>",
                id = running.id.0,
                rev = running.revision.short(),
                user = escape(&running.user),
                stage = escape(running.stage.as_deref().unwrap_or("starting")),
            );
        }
        html.push_str("<h2>Containers</h2><div class=scroll><table><tr><th>Service</th><th>State</th><th>Health</th><th>Revision</th></tr>");
        for c in &status.containers {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                escape(&c.service),
                escape(&c.state),
                escape(c.health.as_deref().unwrap_or("-")),
                escape(c.revision.get(..12).unwrap_or(&c.revision))
            );
        }
        html.push_str("</table></div><h2>History</h2><div class=scroll><table id=history><tr><th>#</th><th>Revision</th><th>Status</th><th>By</th><th>Started</th><th>Took</th><th>Why</th></tr>");
        for d in &history {
            let took = d.finished_at.map_or("-".to_owned(), |f| {
                format!(
                    "{:.1}s",
                    (f - d.started_at).num_milliseconds() as f64 / 1000.0
                )
            });
            let _ = write!(
                html,
                "<tr class={status}><td><a href=\"/deploys/{id}\">{id}</a></td><td><code>{rev}</code></td><td>{status}</td><td>{user}</td><td>{started}</td><td>{took}</td><td>{why}</td></tr>",
                id = d.id.0,
                rev = d.revision.short(),
                status = d.status,
                user = escape(&d.user),
                started = local(d.started_at),
                why = escape(
                    d.error
                        .as_deref()
                        .and_then(|e| e.lines().next())
                        .unwrap_or("")
                ),
            );
        }
        html.push_str("</table></div>");
        // The page follows the ledger: when a deploy starts or ends, its content is fetched
        // again and swapped in, without a reload.
        html.push_str(
            "<script>new EventSource('/events').onmessage = () => fetch('/').then(r => r.text()).then(t => { document.body.innerHTML = new DOMParser().parseFromString(t, 'text/html').body.innerHTML; });</script>",
        );
        Ok(page(StatusCode::OK, &status.project, &html))
    }

    async fn log_page(&self, id: DeploymentId) -> anyhow::Result<Response<Body>> {
        let Some(d) = self.ledger.get(id).await? else {
            return Ok(page(
                StatusCode::NOT_FOUND,
                "Not found",
                "<p>No such deploy.</p>",
            ));
        };
        let text = read_log(&d)?;
        let live = matches!(d.status, Status::Running | Status::Queued);
        let mut html = format!(
            "<p><a href=\"/\">← all deploys</a></p><h1>Deploy {} <code>{}</code></h1><p class=status>{} by {}</p><pre id=log>{}</pre>",
            d.id.0,
            d.revision.short(),
            d.status,
            escape(&d.user),
            escape(&text)
        );
        if live {
            let _ = write!(
                html,
                "<script>const log = document.getElementById('log'); log.textContent = ''; const s = new EventSource('/deploys/{}/stream'); s.onmessage = e => {{ log.textContent += e.data + '\\n'; window.scrollTo(0, document.body.scrollHeight); }}; s.addEventListener('end', () => {{ s.close(); location.reload(); }});</script>",
                d.id.0
            );
        }
        Ok(page(StatusCode::OK, &format!("Deploy {}", d.id.0), &html))
    }

    /// The log as it grows: every line so far, then each new one, until the deploy ends.
    async fn log_stream(&self, id: DeploymentId) -> anyhow::Result<Response<Body>> {
        let ledger = self.ledger.clone();
        if ledger.get(id).await?.is_none() {
            return Ok(page(
                StatusCode::NOT_FOUND,
                "Not found",
                "<p>No such deploy.</p>",
            ));
        }
        let (send, receive) = tokio::sync::mpsc::channel::<Bytes>(64);
        tokio::spawn(async move {
            // Only what was written since the last look is read, from where it ended.
            let mut at = None;
            let mut partial = Vec::new();
            loop {
                let Ok(Some(d)) = ledger.get(id).await else {
                    return;
                };
                let done = !matches!(d.status, Status::Running | Status::Queued);
                if let Ok((bytes, end)) = read_log_from(&d, at) {
                    at = Some(end);
                    partial.extend_from_slice(&bytes);
                }
                while let Some(newline) = partial.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = partial.drain(..=newline).collect();
                    let line = String::from_utf8_lossy(&line[..line.len() - 1]);
                    let event = format!("data: {line}\n\n");
                    if send.send(Bytes::from(event)).await.is_err() {
                        return;
                    }
                }
                if done {
                    let _ = send
                        .send(Bytes::from_static(b"event: end\ndata: end\n\n"))
                        .await;
                    return;
                }
                tokio::time::sleep(POLL).await;
            }
        });
        Ok(sse(receive))
    }

    /// Tells the page when the ledger changes (a deploy queued, started or ended).
    fn watch(&self) -> Response<Body> {
        let (send, receive) = tokio::sync::mpsc::channel::<Bytes>(4);
        let ledger = self.ledger.clone();
        tokio::spawn(async move {
            let mut seen = None;
            loop {
                let now = ledger
                    .history(20)
                    .await
                    .map(|rows| rows.iter().map(|d| (d.id, d.status)).collect::<Vec<_>>())
                    .ok();
                let changed = seen.is_some() && now != seen;
                let message = Bytes::from_static(b"data: changed\n\n");
                if changed && send.send(message).await.is_err() {
                    return;
                }
                seen = now;
                // Also notices a page that went away.
                if send.is_closed() {
                    return;
                }
                tokio::time::sleep(POLL * 4).await;
            }
        });
        sse(receive)
    }
}

/// `/deploys/ID` and `/deploys/ID/stream`.
fn deploy_path(path: &str) -> Option<(DeploymentId, &str)> {
    let rest = path.strip_prefix("/deploys/")?;
    let (id, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    Some((DeploymentId(id.parse().ok()?), tail))
}

/// The end of the deploy's build log (its path comes from the ledger).
fn read_log(d: &Deployment) -> anyhow::Result<String> {
    let (bytes, _) = read_log_from(d, None)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The deploy's build log from byte `from` (at most its last `MAX_LOG` bytes when `None`),
/// and where it ends now. A log not written yet is empty.
fn read_log_from(d: &Deployment, from: Option<u64>) -> anyhow::Result<(Vec<u8>, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    if d.log_path.as_os_str().is_empty() {
        return Ok((Vec::new(), 0));
    }
    let mut file = match std::fs::File::open(&d.log_path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e).context("failed to read the build log"),
    };
    let len = file.metadata()?.len();
    let from = from.unwrap_or(len.saturating_sub(MAX_LOG)).min(len);
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.take(len - from).read_to_end(&mut bytes)?;
    let end = from + bytes.len() as u64;
    Ok((bytes, end))
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn form_decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex: String = bytes.by_ref().take(2).map(char::from).collect();
            out.push(u8::from_str_radix(&hex, 16).unwrap_or(b'?'));
        } else {
            out.push(b);
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn local(at: chrono::DateTime<chrono::Utc>) -> String {
    at.with_timezone(&chrono::Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).boxed_unsync()
}

fn json(value: &impl serde::Serialize) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(
            serde_json::to_vec_pretty(value).expect("plain data serializes"),
        ))
        .expect("a valid response")
}

fn sse(receive: tokio::sync::mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream = futures_util::stream::unfold(receive, |mut receive| async move {
        receive
            .recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), receive))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
        .body(StreamBody::new(stream).boxed_unsync())
        .expect("a valid response")
}

const STYLE: &str = "h1{overflow-wrap:anywhere}body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:70em;padding:1em;color:#222}table{border-collapse:collapse;width:100%}td,th{padding:.3em .5em;border-bottom:1px solid #ddd;text-align:left;white-space:nowrap}.scroll{overflow-x:auto}pre{background:#111;color:#eee;padding:1em;overflow-x:auto;white-space:pre-wrap;word-break:break-all}tr.failed td,tr.canceled td{color:#a00}tr.succeeded td:nth-child(3){color:#070}.running{background:#ffd;padding:.5em}code{font-size:90%}input{font-size:1em;padding:.4em;width:100%;max-width:30em}";

fn page(status: StatusCode, title: &str, body: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html><head><meta charset=utf-8><meta name=viewport content=\"width=device-width, initial-scale=1\"><title>{} · deploy</title><style>{STYLE}</style></head><body>{body}</body></html>",
        escape(title)
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(full(html))
        .expect("a valid response")
}

fn login_form(error: Option<&str>) -> String {
    format!(
        "<h1>deploy</h1>{}<form method=post action=/login><p><label>Token (in <code>ROOT/dashboard.token</code>)<br><input type=password name=token autofocus></label></p><p><button>Sign in</button></p></form>",
        error.map_or(String::new(), |e| format!(
            "<p class=error>{}</p>",
            escape(e)
        ))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_forms_are_read_strictly() {
        assert_eq!(deploy_path("/deploys/12"), Some((DeploymentId(12), "")));
        assert_eq!(
            deploy_path("/deploys/12/stream"),
            Some((DeploymentId(12), "/stream"))
        );
        assert_eq!(deploy_path("/deploys/x"), None);
        assert_eq!(form_decode("a%2Bb+c"), "a+b c");
        assert_eq!(
            escape("<a href=\"x\">&"),
            "&lt;a href=&quot;x&quot;&gt;&amp;"
        );
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"abc", b"ab"));
    }

    #[test]
    fn a_token_file_others_may_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().to_owned());
        let missing = read_token(&root).unwrap_err().to_string();
        assert!(missing.contains("is missing"), "{missing}");
        make_token(&root).unwrap();
        assert_eq!(read_token(&root).unwrap().len(), 48);
        let path = root.dashboard_token();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = read_token(&root).unwrap_err().to_string();
        assert!(open.contains("may be read by others (mode 644)"), "{open}");
    }
}
