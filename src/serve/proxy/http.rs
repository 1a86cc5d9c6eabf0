//! HTTP/1: each request goes to the backend live when it arrives, over a pooled keep-alive
//! connection, with its body streamed both ways; upgrades become tunnels.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::backend::{Active, Backend, Work};
use super::stats::Counters;
use super::{ForwardedHeaders, Phase, Route, RouteName, Shared, Slot, tcp};

/// Where a connection's requests go.
pub(super) enum Target {
    /// A host port's route.
    Port(Arc<Route>),
    /// The route of each request's hostname (`Host`, or HTTP/2's `:authority`); `https`
    /// when the connection came over TLS.
    Hosts { https: bool },
}

/// Serves one client connection until it closes, or until a shutdown lets its current request
/// finish.
pub(super) async fn serve<I>(
    io: I,
    peer: SocketAddr,
    target: Target,
    shared: &Arc<Shared>,
    slot: Slot,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let proto = match target {
        Target::Hosts { https: true } => "https",
        _ => "http",
    };
    let hosts = matches!(target, Target::Hosts { .. });
    let handler = Arc::new(Handler {
        target,
        proto,
        shared: Arc::clone(shared),
        slot: Mutex::new(Some(slot)),
        // A client reaching a `[::]` listener over IPv4 should appear as `1.2.3.4`. Made once
        // per connection rather than per request.
        client: HeaderValue::from_str(&peer.ip().to_canonical().to_string())
            .expect("an IP address is a valid header value"),
    });
    let service = hyper::service::service_fn(move |request| {
        let handler = Arc::clone(&handler);
        async move { Ok::<_, Infallible>(handler.handle(request).await) }
    });
    if hosts {
        let connection =
            (shared.hosts_server).serve_connection_with_upgrades(TokioIo::new(io), service);
        drive(connection, |c| c.graceful_shutdown(), peer, shared).await;
    } else {
        let connection = (shared.server)
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        drive(connection, |c| c.graceful_shutdown(), peer, shared).await;
    }
}

/// Runs a client connection to its end, or until a shutdown: then its request in flight, if
/// any, finishes and the connection closes instead of waiting for the next one.
async fn drive<C, E>(connection: C, graceful: fn(Pin<&mut C>), peer: SocketAddr, shared: &Shared)
where
    C: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(connection);
    let mut phase = shared.phase.subscribe();
    tokio::select! {
        done = connection.as_mut() => return log_end(peer, done),
        _ = phase.wait_for(|phase| *phase >= Phase::Draining) => {}
    }
    graceful(connection.as_mut());
    tokio::select! {
        done = connection.as_mut() => log_end(peer, done),
        _ = phase.wait_for(|phase| *phase == Phase::Stopped) => {}
    }
}

fn log_end<E: std::fmt::Display>(peer: SocketAddr, done: Result<(), E>) {
    if let Err(error) = done {
        tracing::debug!(%peer, %error, "client connection ended with an error");
    }
}

struct Handler {
    target: Target,
    /// `X-Forwarded-Proto`: how the client reached us.
    proto: &'static str,
    shared: Arc<Shared>,
    /// The client's address, as `X-Forwarded-For` gives it.
    client: HeaderValue,
    /// The connection's slot under the cap; an upgrade hands it to its tunnel.
    slot: Mutex<Option<Slot>>,
}

impl Handler {
    async fn handle(&self, mut request: Request<Incoming>) -> Response<RespBody> {
        Counters::bump(&self.shared.counters.requests);
        // RFC 8441: a WebSocket (or another protocol) on an HTTP/2 stream, asked for with an
        // extended CONNECT naming it; the app gets the HTTP/1.1 upgrade it knows.
        let extended = (request.method() == Method::CONNECT)
            .then(|| request.extensions().get::<hyper::ext::Protocol>())
            .flatten()
            .map(|protocol| protocol.as_str().to_owned());
        if request.method() == Method::CONNECT && extended.is_none() {
            return plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: `CONNECT` is for forward proxies\n",
            );
        }
        let client_upgrade = (extended.is_some() || is_upgrade(request.headers()))
            .then(|| hyper::upgrade::on(&mut request));
        let upgrade = if client_upgrade.is_some() {
            UpgradeHeaders::Keep
        } else {
            UpgradeHeaders::Strip
        };
        let route = match self.route_for(&request) {
            Ok(route) => route,
            Err(answer) => return *answer,
        };
        let mut request = rewrite_request(
            request,
            &self.client,
            Forwarding {
                headers: self.shared.config.forwarded,
                proto: self.proto,
            },
            upgrade,
        );
        if let Some(protocol) = &extended {
            as_http1_upgrade(&mut request, protocol);
        }
        let (active, backend, mut response) = match self.forward(&route, request).await {
            Ok(forwarded) => forwarded,
            Err(answer) => return answer,
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let mut answer = self.tunnel(active, client_upgrade, response, &backend);
            if extended.is_some() && answer.status() == StatusCode::SWITCHING_PROTOCOLS {
                // On HTTP/2 the stream itself is the tunnel, which `200` opens.
                *answer.status_mut() = StatusCode::OK;
                let headers = answer.headers_mut();
                for name in [
                    header::CONNECTION,
                    header::UPGRADE,
                    header::SEC_WEBSOCKET_ACCEPT,
                ] {
                    headers.remove(name);
                }
            }
            return answer;
        }
        strip_hop_by_hop(response.headers_mut(), UpgradeHeaders::Strip);
        response.map(|body| RespBody::Proxied {
            body,
            active: Some(active),
        })
    }

    /// The route a request takes: its port's, or its hostname's (an ACME challenge, an
    /// unknown host and the redirect to HTTPS are answered here instead).
    fn route_for<B>(&self, request: &Request<B>) -> Result<Arc<Route>, Box<Response<RespBody>>> {
        let https = match &self.target {
            Target::Port(route) => return Ok(Arc::clone(route)),
            Target::Hosts { https } => *https,
        };
        let token = (request.uri().path()).strip_prefix("/.well-known/acme-challenge/");
        if let Some(answer) = token.and_then(|t| self.shared.challenges.answer(t)) {
            return Err(Box::new(plain(StatusCode::OK, &answer)));
        }
        let host = request_host(request).unwrap_or_default();
        let Some(entry) = self.shared.host(&host) else {
            Counters::bump(&self.shared.counters.no_backend);
            return Err(Box::new(plain(StatusCode::NOT_FOUND, "not found\n")));
        };
        if !https
            && entry.https_redirect
            && let Some(port) = self.shared.https_port_for(&host)
        {
            return Err(Box::new(to_https(&host, port, request.uri())));
        }
        Ok(entry.route)
    }

    /// Sends the request to the route's live backend, chosen now, when it arrives: after a
    /// switch, the next request on a keep-alive connection goes to the new one. One that
    /// cannot be connected to never saw the request, which goes to the next backend of the
    /// route, if it has one. A failure is the client's answer (`503`, `502`, `504`).
    async fn forward(
        &self,
        route: &Route,
        mut request: Request<ReqBody>,
    ) -> Result<(Active, Arc<Backend>, Response<Incoming>), Response<RespBody>> {
        let mut tried = Vec::new();
        loop {
            let Some(active) = route.enter(Work::Request, &tried) else {
                Counters::bump(&self.shared.counters.no_backend);
                let text = match route.name {
                    RouteName::Port(_) => {
                        "service unavailable: nothing is deployed on this port yet\n"
                    }
                    RouteName::Host(_) => {
                        "service unavailable: nothing is deployed for this hostname yet\n"
                    }
                };
                return Err(plain(StatusCode::SERVICE_UNAVAILABLE, text));
            };
            let backend = Arc::clone(active.backend());
            let error = match send(&backend, request, &self.shared).await {
                Ok(response) => return Ok((active, backend, response)),
                Err(Failed::Unsent(error, unsent)) if route.has_other(&tried, &backend) => {
                    backend.set_up(false);
                    Counters::bump(&self.shared.counters.retries);
                    tracing::debug!(route = %route.name, backend = %backend.addr, %error, "trying the next backend");
                    tried.push(backend.addr);
                    request = *unsent;
                    continue;
                }
                Err(Failed::Unsent(error, _) | Failed::Sent(error)) => error,
            };
            if let ForwardError::Timeout(_) = error {
                tracing::warn!(route = %route.name, backend = %backend.addr, %error, "gateway timeout");
                return Err(plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!("gateway timeout: failed to {error}\n"),
                ));
            }
            Counters::bump(&self.shared.counters.bad_gateway);
            tracing::warn!(route = %route.name, backend = %backend.addr, %error, "bad gateway");
            return Err(plain(
                StatusCode::BAD_GATEWAY,
                &format!("bad gateway: failed to {error}\n"),
            ));
        }
    }

    /// The app agreed to switch protocols (a WebSocket, say): the two connections become a
    /// plain tunnel, which keeps the connection's slot and what a shutdown waits for.
    fn tunnel(
        &self,
        active: Active,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        mut response: Response<Incoming>,
        backend: &Backend,
    ) -> Response<RespBody> {
        let Some(client_upgrade) = client_upgrade else {
            Counters::bump(&self.shared.counters.bad_gateway);
            tracing::warn!(backend = %backend.addr, "bad gateway: `101` to a request that asked for no upgrade");
            return plain(
                StatusCode::BAD_GATEWAY,
                "bad gateway: the app switched protocols unasked\n",
            );
        };
        Counters::bump(&self.shared.counters.upgrades);
        let backend_upgrade = hyper::upgrade::on(&mut response);
        let shared = Arc::clone(&self.shared);
        let active = active.into_tunnel();
        // The client connection ends as hyper hands it over; the tunnel is what a shutdown
        // waits for now, and what holds the connection's slot.
        let connection = self.shared.connection_opened();
        let slot = self
            .slot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        tokio::spawn(async move {
            match tokio::try_join!(client_upgrade, backend_upgrade) {
                Ok((client, upstream)) => {
                    tcp::splice(
                        &mut TokioIo::new(client),
                        &mut TokioIo::new(upstream),
                        &shared,
                    )
                    .await;
                }
                Err(error) => tracing::debug!(%error, "upgrade failed after `101`"),
            }
            drop(active);
            drop(connection);
            drop(slot);
        });
        strip_hop_by_hop(response.headers_mut(), UpgradeHeaders::Keep);
        response.map(|_| RespBody::Full(None))
    }
}

/// Why a request got `502 Bad Gateway`; read after "failed to".
#[derive(Debug, thiserror::Error)]
pub(super) enum ForwardError {
    #[error("connect to the app: {0}")]
    Connect(io::Error),
    #[error("connect to the app: no answer within {}s", .0.as_secs_f32())]
    ConnectTimeout(Duration),
    #[error("get an answer from the app: {0}")]
    Exchange(hyper::Error),
    #[error("get an answer from the app within {}s", .0.as_secs_f32())]
    Timeout(Duration),
}

/// Why `send` failed, and the request when it never left.
pub(super) enum Failed {
    /// No connection could be made: the request may go elsewhere.
    Unsent(ForwardError, Box<Request<ReqBody>>),
    Sent(ForwardError),
}

/// Sends `request` over an idle pooled connection if there is one, else over a new one.
///
/// A pooled connection can be closed by the server at the moment we reuse it (its keep-alive
/// timeout, or a restart). Two cases are safe to send again: hyper hands the request back when
/// it never wrote it (any method; it goes to the next connection), and an idempotent request
/// without a body may be repeated, once, on a fresh connection when the pooled one failed
/// before any answer (RFC 9112 §9.3.1). Anything else, and a fresh connection failing, is
/// the backend's failure, answered `502`: a POST the app may have acted on is never repeated.
async fn send(
    backend: &Arc<Backend>,
    request: Request<ReqBody>,
    shared: &Shared,
) -> Result<Response<Incoming>, Failed> {
    let config = &shared.config;
    let replayable = is_replayable(&request);
    let mut replay = None;
    let mut request = request;
    let timeout = config.upstream_timeout;
    let answer = |sent| async move {
        tokio::time::timeout(timeout, sent)
            .await
            .map_err(|_| Failed::Sent(ForwardError::Timeout(timeout)))
    };
    while let Some(mut sender) = backend.checkout(config.pool_idle_timeout) {
        if replayable && replay.is_none() {
            replay = Some(Replay::of(&request));
        }
        match answer(sender.try_send_request(request)).await? {
            Ok(response) => {
                checkin_when_idle(sender, backend, shared);
                return Ok(response);
            }
            Err(mut error) => {
                if let Some(unsent) = error.take_message() {
                    Counters::bump(&shared.counters.retries);
                    tracing::debug!(backend = %backend.addr, error = %error.error(), "pooled connection closed before the request was sent; retrying");
                    request = unsent;
                    continue;
                }
                let Some(replay) = replay.take() else {
                    return Err(Failed::Sent(ForwardError::Exchange(error.into_error())));
                };
                Counters::bump(&shared.counters.retries);
                tracing::debug!(backend = %backend.addr, error = %error.error(), "pooled connection failed before an answer; retrying an idempotent request");
                request = replay.into_request();
                break;
            }
        }
    }
    let mut sender = match connect(backend.addr, shared).await {
        Ok(sender) => sender,
        Err(error) => return Err(Failed::Unsent(error, Box::new(request))),
    };
    backend.set_up(true);
    match answer(sender.try_send_request(request)).await? {
        Ok(response) => {
            checkin_when_idle(sender, backend, shared);
            Ok(response)
        }
        Err(error) => Err(Failed::Sent(ForwardError::Exchange(error.into_error()))),
    }
}

async fn connect(addr: SocketAddr, shared: &Shared) -> Result<SendRequest<ReqBody>, ForwardError> {
    let timeout = shared.config.connect_timeout;
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_elapsed| ForwardError::ConnectTimeout(timeout))?
        .map_err(ForwardError::Connect)?;
    stream.set_nodelay(true).map_err(ForwardError::Connect)?;
    let (sender, connection) = shared
        .client
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ForwardError::Exchange)?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(backend = %addr, %error, "backend connection ended with an error");
        }
    });
    Ok(sender)
}

/// Returns the connection to the pool once hyper says it is ready for another request, which
/// is after the response body has been read to its end. A response cut short, an upgrade or a
/// `Connection: close` from the app leaves it not ready, and it is dropped.
fn checkin_when_idle(mut sender: SendRequest<ReqBody>, backend: &Arc<Backend>, shared: &Shared) {
    let backend = Arc::clone(backend);
    let idle_timeout = shared.config.pool_idle_timeout;
    let max_idle = shared.config.pool_max_idle;
    tokio::spawn(async move {
        if sender.ready().await.is_ok() {
            backend.checkin(sender, idle_timeout, max_idle);
        }
    });
}

/// Idempotent (RFC 9110 §9.2.2) and without a body, so sending it twice is allowed and needs
/// nothing we no longer have.
fn is_replayable(request: &Request<ReqBody>) -> bool {
    let idempotent = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    idempotent && request.body().is_end_stream()
}

/// What it takes to send a bodiless request again.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Replay {
    fn of(request: &Request<ReqBody>) -> Self {
        Self {
            method: request.method().clone(),
            uri: request.uri().clone(),
            headers: request.headers().clone(),
        }
    }

    fn into_request(self) -> Request<ReqBody> {
        let mut request = Request::new(ReqBody::Empty);
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.headers_mut() = self.headers;
        request
    }
}

/// Whether hop-by-hop `Upgrade`/`Connection: upgrade` travel on (a WebSocket handshake) or
/// are removed like the other hop-by-hop headers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UpgradeHeaders {
    Keep,
    Strip,
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && connection_tokens(headers).any(|token| token.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// Headers that belong to one connection (RFC 9110 §7.6.1), plus any the `Connection` header
/// names: each hop sets its own.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: UpgradeHeaders) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
    for name in named {
        if !(upgrade == UpgradeHeaders::Keep && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    match upgrade {
        UpgradeHeaders::Keep => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        }
        UpgradeHeaders::Strip => {
            headers.remove(header::UPGRADE);
        }
    }
}

/// The request as the backend should see it: origin-form target, HTTP/1.1 (so the pooled
/// connection stays open), hop-by-hop headers replaced, `X-Forwarded-*` added. `Host` is kept.
/// What this hop says in the forwarding headers.
#[derive(Clone, Copy)]
struct Forwarding {
    headers: ForwardedHeaders,
    /// `http` or `https`.
    proto: &'static str,
}

/// The hostname a request asks for (HTTP/2's `:authority` or an absolute target, else
/// `Host`), lower-cased, without its port or a trailing dot.
fn request_host<B>(request: &Request<B>) -> Option<String> {
    let authority = match request.uri().authority() {
        Some(authority) => authority.host().to_owned(),
        None => {
            let host = request.headers().get(header::HOST)?.to_str().ok()?;
            host.parse::<hyper::http::uri::Authority>()
                .ok()?
                .host()
                .to_owned()
        }
    };
    Some(authority.trim_end_matches('.').to_ascii_lowercase())
}

/// An extended CONNECT for `protocol` as the HTTP/1.1 upgrade an app expects: `GET` with
/// `Upgrade: protocol`, and for a WebSocket a `Sec-WebSocket-Key` of our own (HTTP/2 does
/// without one; the app's `Sec-WebSocket-Accept` answers it and goes no further).
pub(super) fn as_http1_upgrade(request: &mut Request<ReqBody>, protocol: &str) {
    *request.method_mut() = Method::GET;
    let headers = request.headers_mut();
    if let Ok(value) = HeaderValue::from_str(protocol) {
        headers.insert(header::UPGRADE, value);
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if protocol.eq_ignore_ascii_case("websocket")
        && !headers.contains_key(header::SEC_WEBSOCKET_KEY)
    {
        use base64::Engine;
        let mut nonce = [0u8; 16];
        let random = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut nonce));
        if random.is_err() {
            nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
                .to_le_bytes();
        }
        let key = base64::engine::general_purpose::STANDARD.encode(nonce);
        if let Ok(value) = HeaderValue::from_str(&key) {
            headers.insert(header::SEC_WEBSOCKET_KEY, value);
        }
    }
}

/// `308` to the same path over HTTPS (a method and body are kept, unlike with `301`).
fn to_https(host: &str, port: u16, uri: &Uri) -> Response<RespBody> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = match port {
        443 => format!("https://{host}{path}"),
        port => format!("https://{host}:{port}{path}"),
    };
    let mut response = plain(
        StatusCode::PERMANENT_REDIRECT,
        &format!("moved to {location}\n"),
    );
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn rewrite_request(
    request: Request<Incoming>,
    client: &HeaderValue,
    forwarding: Forwarding,
    upgrade: UpgradeHeaders,
) -> Request<ReqBody> {
    let (mut parts, body) = request.into_parts();
    // An absolute-form target (`GET http://host/path`) names the host, which then wins over
    // `Host` (RFC 9112 §3.2.2); apps expect the origin form.
    if let Some(authority) = parts.uri.authority() {
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(header::HOST, host);
        }
        let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
        if let Ok(uri) = Uri::try_from(path) {
            parts.uri = uri;
        }
    }
    parts.version = Version::HTTP_11;
    // Hyper's server answers `Expect: 100-continue` itself when the body is first read.
    parts.headers.remove(header::EXPECT);
    strip_hop_by_hop(&mut parts.headers, upgrade);
    add_forwarded(&mut parts.headers, client, forwarding);
    // Nothing hyper's server attached to the request means anything to its client.
    parts.extensions.clear();
    Request::from_parts(parts, ReqBody::Incoming(body))
}

fn add_forwarded(headers: &mut HeaderMap, client: &HeaderValue, forwarding: Forwarding) {
    let forwarded = forwarding.headers;
    let x_forwarded_for = HeaderName::from_static("x-forwarded-for");
    let x_forwarded_proto = HeaderName::from_static("x-forwarded-proto");
    let earlier: Vec<&str> = match forwarded {
        ForwardedHeaders::Extend => headers
            .get_all(&x_forwarded_for)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect(),
        ForwardedHeaders::Replace => Vec::new(),
    };
    if earlier.is_empty() {
        headers.insert(x_forwarded_for, client.clone());
    } else {
        let client = client.to_str().unwrap_or_default();
        if let Ok(value) = HeaderValue::from_str(&format!("{}, {client}", earlier.join(", "))) {
            headers.insert(x_forwarded_for, value);
        }
    }
    // With `Extend`, a TLS terminator in front has already said `https`, and which host.
    let replace = forwarded == ForwardedHeaders::Replace;
    if replace || !headers.contains_key(&x_forwarded_proto) {
        headers.insert(
            x_forwarded_proto,
            HeaderValue::from_static(forwarding.proto),
        );
    }
    let x_forwarded_host = HeaderName::from_static("x-forwarded-host");
    let host = headers.get(header::HOST).cloned();
    if let Some(host) = &host
        && (replace || !headers.contains_key(&x_forwarded_host))
    {
        headers.insert(x_forwarded_host, host.clone());
    }
    // RFC 7239's `Forwarded` says the same in one header; this hop's element is appended.
    let element = forwarded_element(
        client.to_str().unwrap_or_default(),
        forwarding.proto,
        host.as_ref().and_then(|h| h.to_str().ok()),
    );
    let earlier: Vec<&str> = match forwarded {
        ForwardedHeaders::Extend => (headers.get_all(header::FORWARDED).iter())
            .filter_map(|value| value.to_str().ok())
            .collect(),
        ForwardedHeaders::Replace => Vec::new(),
    };
    let value = earlier
        .into_iter()
        .chain([element.as_str()])
        .collect::<Vec<_>>()
        .join(", ");
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(header::FORWARDED, value);
    }
}

/// This hop's `Forwarded` element: `for=…;proto=http;host=…`, an IPv6 address and any value
/// that is not a token quoted (RFC 7239 §4, §6).
pub(super) fn forwarded_element(client: &str, proto: &str, host: Option<&str>) -> String {
    let quoted = |v: &str| {
        let token = !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if token {
            v.to_owned()
        } else {
            format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
        }
    };
    let client = match client.contains(':') {
        true => format!("[{client}]"),
        false => client.to_owned(),
    };
    let mut element = format!("for={};proto={proto}", quoted(&client));
    if let Some(host) = host {
        element.push_str(&format!(";host={}", quoted(host)));
    }
    element
}

fn plain(status: StatusCode, text: &str) -> Response<RespBody> {
    let mut response = Response::new(RespBody::Full(Some(Bytes::copy_from_slice(
        text.as_bytes(),
    ))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A request body on its way to the backend: the client's, streamed, or none (a replay).
pub(super) enum ReqBody {
    Incoming(Incoming),
    Empty,
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Incoming(body) => Pin::new(body).poll_frame(cx),
            Self::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Incoming(body) => body.is_end_stream(),
            Self::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Incoming(body) => body.size_hint(),
            Self::Empty => SizeHint::with_exact(0),
        }
    }
}

/// A response body on its way to the client: the backend's, streamed, holding the request
/// open on its backend until its end; or one the proxy wrote.
pub(super) enum RespBody {
    Proxied {
        body: Incoming,
        active: Option<Active>,
    },
    Full(Option<Bytes>),
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Proxied { body, active } => {
                let polled = Pin::new(body).poll_frame(cx);
                // The exchange is over at the body's end; don't make a drain wait until hyper
                // gets round to dropping us.
                if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
                    active.take();
                }
                polled
            }
            Self::Full(data) => Poll::Ready(data.take().map(|data| Ok(Frame::data(data)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Proxied { body, .. } => body.is_end_stream(),
            Self::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Proxied { body, .. } => body.size_hint(),
            Self::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64))
            }
        }
    }
}
