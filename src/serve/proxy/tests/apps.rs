//! Stand-ins for containers, on loopback: a small HTTP app, a line-protocol server, a server
//! that speaks first, one that drops keep-alive connections, and the clients the tests use.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// A free loopback address for apps that a test stops and starts again on it.
///
/// Below the kernel's ephemeral range (32768 and up by default): between two apps the port
/// is unbound, and an ephemeral port could be handed to any outgoing connection of the
/// test run, making the next app's bind fail.
pub(super) fn free_addr() -> SocketAddr {
    use std::hash::{BuildHasher, RandomState};
    let random = RandomState::new();
    for attempt in 0..100_u32 {
        let port = 20_000 + (random.hash_one(attempt) % 12_000) as u16;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free port between 20000 and 32000");
}

fn bind(addr: SocketAddr) -> TcpListener {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    // The app that ran here before closed its connections first; they sit in `TIME_WAIT`.
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(addr).expect("bind the app's address");
    socket.listen(1024).expect("listen")
}

/// An HTTP/1 app named `name`:
/// - `/` answers `backend <name>`;
/// - `/slow?ms=N` answers `backend <name> (slow)` after N ms;
/// - `/headers` answers the `host`, `x-forwarded-*`, `forwarded` and `x-secret` it
///   received, one `name: value` per line;
/// - `/echo` streams the request body back as it arrives;
/// - `Upgrade: echo` switches to a protocol that sends `<name>\n`, then echoes.
///
/// `stop` behaves like an app server on SIGTERM: it stops accepting, finishes requests in
/// flight, closes keep-alive connections and cuts upgraded ones. `kill` cuts everything.
pub(super) struct App {
    pub(super) addr: SocketAddr,
    /// Connections accepted: tells a reused backend connection from a new one.
    pub(super) accepted: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl App {
    pub(super) async fn start(name: &str) -> Self {
        Self::start_on(name, "127.0.0.1:0".parse().expect("address")).await
    }

    pub(super) async fn start_on(name: &str, addr: SocketAddr) -> Self {
        let listener = bind(addr);
        let addr = listener.local_addr().expect("local address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve_app(
            listener,
            Arc::from(name),
            Arc::clone(&accepted),
            stopped,
        ));
        Self {
            addr,
            accepted,
            stop,
            server,
        }
    }

    pub(super) async fn stop(self) {
        self.stop.send_replace(true);
        self.server.await.expect("the app's server task");
    }

    /// Like `docker kill`: every connection is cut, whatever it was doing.
    pub(super) async fn kill(self) {
        self.server.abort();
        let _ = self.server.await;
    }
}

async fn serve_app(
    listener: TcpListener,
    name: Arc<str>,
    accepted: Arc<AtomicUsize>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = stopped.wait_for(|stopped| *stopped) => break,
            accepted = listener.accept() => accepted.expect("accept").0,
        };
        accepted.fetch_add(1, Ordering::SeqCst);
        let name = Arc::clone(&name);
        let mut stopped = stopped.clone();
        let for_upgrades = stopped.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let name = Arc::clone(&name);
                let stopped = for_upgrades.clone();
                async move { Ok::<_, Infallible>(answer(&name, request, stopped).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stopped.wait_for(|stopped| *stopped) => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn answer(
    name: &str,
    mut request: Request<Incoming>,
    mut stopped: watch::Receiver<bool>,
) -> Response<http_body_util::combinators::BoxBody<Bytes, hyper::Error>> {
    let text = |text: String| {
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed()
    };
    if request.headers().get(header::UPGRADE) == Some(&HeaderValue::from_static("echo")) {
        let upgrade = hyper::upgrade::on(&mut request);
        let greeting = format!("{name}\n");
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut io = TokioIo::new(upgraded);
            let echo = async {
                io.write_all(greeting.as_bytes()).await?;
                let mut buf = [0; 1024];
                loop {
                    let n = io.read(&mut buf).await?;
                    if n == 0 {
                        return Ok::<_, std::io::Error>(());
                    }
                    io.write_all(&buf[..n]).await?;
                }
            };
            tokio::select! {
                _ = echo => {}
                _ = stopped.wait_for(|stopped| *stopped) => {}
            }
        });
        let mut response = Response::new(text(String::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("echo"));
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        return response;
    }
    match request.uri().path() {
        "/slow" => {
            let ms = request
                .uri()
                .query()
                .and_then(|query| query.strip_prefix("ms="))
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(500);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(text(format!("backend {name} (slow)")))
        }
        "/headers" => {
            let mut lines = String::new();
            let keys = [
                "host",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "forwarded",
                "x-secret",
            ];
            for key in keys {
                for value in request.headers().get_all(key) {
                    lines.push_str(&format!("{key}: {}\n", value.to_str().unwrap_or("?")));
                }
            }
            Response::new(text(lines))
        }
        "/echo" => Response::new(request.into_body().boxed()),
        _ => Response::new(text(format!("backend {name}"))),
    }
}

/// A line protocol (not HTTP): each line `x` is answered `<name>: x`.
pub(super) async fn start_line_server(name: &'static str) -> SocketAddr {
    let listener = bind("127.0.0.1:0".parse().expect("address"));
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write
                        .write_all(format!("{name}: {line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A server that speaks first (as SMTP does): `220 <name>` on connect.
pub(super) async fn start_greeting_server(name: &'static str) -> SocketAddr {
    let listener = bind("127.0.0.1:0".parse().expect("address"));
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.expect("accept");
            tokio::spawn(async move {
                let _ = stream.write_all(format!("220 {name}\n").as_bytes()).await;
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            });
        }
    });
    addr
}

/// An app whose keep-alive connections die under the proxy: each connection answers its first
/// request (`fresh`, keep-alive), then reads the next request and closes without a word, as a
/// server whose keep-alive timeout fires just as a request arrives.
pub(super) async fn start_closing_server() -> SocketAddr {
    let listener = bind("127.0.0.1:0".parse().expect("address"));
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                if read_head(&mut reader).await.is_none() {
                    return;
                }
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfresh";
                if reader.get_mut().write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let _ = read_head(&mut reader).await;
            });
        }
    });
    addr
}

/// Reads a request or response head, up to its blank line.
pub(super) async fn read_head<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            return Some(head);
        }
    }
}

/// One keep-alive client connection, like a browser's.
pub(super) struct Client {
    sender: SendRequest<Full<Bytes>>,
}

/// What a request came back with.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) body: String,
}

impl Client {
    pub(super) async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(connection);
        Ok(Self { sender })
    }

    pub(super) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    pub(super) async fn get(&mut self, path: &str) -> Result<Answer, hyper::Error> {
        self.send(Request::get(path).body(Full::default()).expect("request"))
            .await
    }

    pub(super) async fn send(
        &mut self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Answer, hyper::Error> {
        request
            .headers_mut()
            .entry(header::HOST)
            .or_insert(HeaderValue::from_static("app.example"));
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// `GET path` on a connection of its own.
pub(super) async fn get_once(addr: SocketAddr, path: &str) -> Result<Answer, String> {
    let mut client = Client::connect(addr)
        .await
        .map_err(|error| error.to_string())?;
    client.get(path).await.map_err(|error| error.to_string())
}
