//! The proxy against real servers on loopback: routing, switches under load, drains, TCP,
//! upgrades, failures and restarts.

mod apps;
mod hosts;
mod limits;
mod replicas;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{DrainReport, Proxy, ProxyConfig, ProxyError};
use apps::{App, Client, get_once};

async fn proxy_with(config: ProxyConfig) -> (Proxy, SocketAddr) {
    let proxy = Proxy::new(config);
    let addr = proxy
        .listen("127.0.0.1:0".parse().expect("address"))
        .expect("listen");
    (proxy, addr)
}

async fn proxy() -> (Proxy, SocketAddr) {
    proxy_with(ProxyConfig::default()).await
}

/// Polls `condition` until it holds; panics after 5 s.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_the_backend_and_a_keep_alive_connection_sees_the_switch() {
    let a = App::start("A").await;
    let b = App::start("B").await;
    let (proxy, addr) = proxy().await;
    assert_eq!(
        proxy.set_backend(addr.port(), a.addr).expect("switch"),
        None
    );

    let mut client = Client::connect(addr).await.expect("connect");
    for _ in 0..3 {
        let answer = client.get("/").await.expect("request");
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, "backend A")
        );
    }
    // The proxy kept its connection to A alive between requests.
    assert_eq!(a.accepted.load(Ordering::SeqCst), 1);

    assert_eq!(
        proxy.set_backend(addr.port(), b.addr).expect("switch"),
        Some(a.addr)
    );
    let answer = client.get("/").await.expect("request after the switch");
    assert_eq!(answer.body, "backend B");
    let stats = proxy.stats();
    assert_eq!((stats.connections, stats.requests), (1, 4), "{stats}");
    // A's idle connection was closed at the switch, and A was then forgotten.
    assert_eq!(stats.backend(a.addr), None, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_requests_and_http_1_0_clients_are_served() {
    let a = App::start("A").await;
    let (proxy, addr) = proxy().await;
    proxy.set_backend(addr.port(), a.addr).expect("switch");
    let mut client = Client::connect(addr).await.expect("connect");
    let head = Request::head("/").body(Full::default()).expect("request");
    let answer = client.send(head).await.expect("HEAD");
    assert_eq!((answer.status, answer.body.as_str()), (StatusCode::OK, ""));
    // The connection is still usable: the bodiless answer was framed right.
    assert_eq!(client.get("/").await.expect("GET").body, "backend A");

    // An HTTP/1.0 client without `Host` gets an HTTP/1.0 answer, and the connection closes.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nbackend A"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_forwarded_like_other_proxies_do_and_host_is_kept() {
    let a = App::start("A").await;
    let (proxy, addr) = proxy().await;
    proxy.set_backend(addr.port(), a.addr).expect("switch");
    let mut client = Client::connect(addr).await.expect("connect");

    let answer = client.get("/headers").await.expect("request");
    assert_eq!(
        answer.body,
        "host: app.example\nx-forwarded-for: 127.0.0.1\nx-forwarded-proto: http\nx-forwarded-host: app.example\nforwarded: for=127.0.0.1;proto=http;host=app.example\n"
    );

    // What a TLS terminator in front says is kept and extended; headers the client named in
    // `Connection` were for the proxy only.
    let request = Request::get("/headers")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "shop.example")
        .header("forwarded", "for=203.0.113.7;proto=https")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "for the first hop")
        .body(Full::default())
        .expect("request");
    let answer = client.send(request).await.expect("request");
    assert_eq!(
        answer.body,
        "host: app.example\nx-forwarded-for: 203.0.113.7, 127.0.0.1\nx-forwarded-proto: https\nx-forwarded-host: shop.example\nforwarded: for=203.0.113.7;proto=https, for=127.0.0.1;proto=http;host=app.example\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replace_the_client_cannot_forge_forwarded_headers() {
    let a = App::start("A").await;
    let config = ProxyConfig {
        forwarded: super::ForwardedHeaders::Replace,
        ..ProxyConfig::default()
    };
    let (proxy, addr) = proxy_with(config).await;
    proxy.set_backend(addr.port(), a.addr).expect("switch");
    let request = Request::get("/headers")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "bank.example")
        .header("forwarded", "for=203.0.113.7")
        .body(Full::default())
        .expect("request");
    let mut client = Client::connect(addr).await.expect("connect");
    let answer = client.send(request).await.expect("request");
    assert_eq!(
        answer.body,
        "host: app.example\nx-forwarded-for: 127.0.0.1\nx-forwarded-proto: http\nx-forwarded-host: app.example\nforwarded: for=127.0.0.1;proto=http;host=app.example\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways_without_buffering() {
    let a = App::start("A").await;
    let (proxy, addr) = proxy().await;
    proxy.set_backend(addr.port(), a.addr).expect("switch");

    // A chunked upload whose second chunk is only sent once the first came back: a proxy that
    // buffered either body would wait forever.
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n",
        )
        .await
        .expect("send the head and a chunk");
    let mut reader = BufReader::new(stream);
    let head = apps::read_head(&mut reader).await.expect("response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let echoed = read_until(&mut reader, "first").await;
    assert!(echoed.contains("first"), "{echoed}");
    reader
        .get_mut()
        .write_all(b"6\r\nsecond\r\n0\r\n\r\n")
        .await
        .expect("send the rest");
    let echoed = read_until(&mut reader, "\r\n0\r\n\r\n").await;
    assert!(echoed.contains("second"), "{echoed}");
}

/// Reads until `needle` has arrived (within 5 s); returns what was read.
async fn read_until<R: AsyncReadExt + Unpin>(reader: &mut R, needle: &str) -> String {
    let mut seen = String::new();
    let mut buf = [0; 1024];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !seen.contains(needle) {
            let n = reader.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before {needle:?}; got {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {needle:?} within 5 s; got {seen:?}"));
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_backend_http_gets_503_and_tcp_is_closed() {
    let (proxy, addr) = proxy().await;

    let answer = get_once(addr, "/").await.expect("request");
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        answer.body,
        "service unavailable: nothing is deployed on this port yet\n"
    );

    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"PING host\n").await.expect("write");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");

    let stats = proxy.stats();
    assert_eq!((stats.no_backend, stats.failures()), (2, 2), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_backend_leaves_the_port_answering_503() {
    let a = App::start("A").await;
    let (proxy, addr) = proxy().await;
    proxy.set_backend(addr.port(), a.addr).expect("switch");
    assert_eq!(proxy.backends(addr.port()), [a.addr]);
    let mut client = Client::connect(addr).await.expect("connect");
    assert_eq!(client.get("/").await.expect("request").body, "backend A");

    assert_eq!(proxy.remove_backend(addr.port()).expect("remove"), [a.addr]);
    assert_eq!(proxy.backends(addr.port()), []);
    let report = proxy
        .drain(a.addr, super::DEFAULT_DRAIN_TIMEOUT)
        .await
        .expect("drain");
    assert!(report.is_complete(), "{report}");
    let answer = client.get("/").await.expect("request");
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_gets_502_with_a_clear_body() {
    let (proxy, addr) = proxy().await;
    proxy
        .set_backend(addr.port(), apps::free_addr())
        .expect("switch");

    let answer = get_once(addr, "/").await.expect("request");
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert!(
        answer
            .body
            .starts_with("bad gateway: failed to connect to the app: Connection refused"),
        "{}",
        answer.body
    );
    assert_eq!(proxy.stats().bad_gateway, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_request_on_a_connection_the_app_closed_is_retried_once() {
    let app = apps::start_closing_server().await;
    let (proxy, addr) = proxy().await;
    proxy.set_backend(addr.port(), app).expect("switch");
    let mut client = Client::connect(addr).await.expect("connect");

    let first = client.get("/").await.expect("first request");
    assert_eq!(
        (first.status, first.body.as_str()),
        (StatusCode::OK, "fresh")
    );
    eventually("the connection is pooled", || {
        proxy
            .stats()
            .backend(app)
            .is_some_and(|backend| backend.pooled == 1)
    })
    .await;
    // Sent on the pooled connection, which the app closes on reading it: sent again on a new
    // connection.
    let second = client.get("/").await.expect("second request");
    assert_eq!(
        (second.status, second.body.as_str()),
        (StatusCode::OK, "fresh")
    );
    let stats = proxy.stats();
    assert_eq!((stats.retries, stats.bad_gateway), (1, 0), "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_idempotent_request_is_never_sent_twice() {
    let app = apps::start_closing_server().await;
    let (proxy, addr) = proxy().await;
    proxy.set_backend(addr.port(), app).expect("switch");
    let mut client = Client::connect(addr).await.expect("connect");
    client.get("/").await.expect("first request");
    eventually("the connection is pooled", || {
        proxy
            .stats()
            .backend(app)
            .is_some_and(|backend| backend.pooled == 1)
    })
    .await;

    // The app may have acted on it before closing, so it is not repeated.
    let post = Request::post("/")
        .body(Full::new(Bytes::from_static(b"order=1")))
        .expect("request");
    let answer = client.send(post).await.expect("answer");
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(proxy.stats().retries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_finishes_after_the_switch_and_the_drain_waits_for_it() {
    let a = App::start("A").await;
    let b = App::start("B").await;
    let (proxy, addr) = proxy().await;
    proxy.set_backend(addr.port(), a.addr).expect("switch");

    let slow = tokio::spawn(get_once(addr, "/slow?ms=600"));
    eventually("the slow request is in flight", || {
        proxy
            .stats()
            .backend(a.addr)
            .is_some_and(|backend| backend.requests == 1)
    })
    .await;
    let old = proxy.set_backend(addr.port(), b.addr).expect("switch");
    assert_eq!(old, Some(a.addr));
    let answer = get_once(addr, "/").await.expect("request after the switch");
    assert_eq!(answer.body, "backend B");

    let report = proxy
        .drain(a.addr, Duration::from_secs(5))
        .await
        .expect("drain");
    assert!(report.is_complete(), "{report}");
    assert!(report.waited >= Duration::from_millis(100), "{report}");
    // The drain returned because the slow response was finished.
    let answer = slow.await.expect("task").expect("slow request");
    assert_eq!(answer.body, "backend A (slow)");
    a.stop().await;
    assert_eq!(proxy.stats().failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_times_out_and_reports_what_was_open() {
    let a = App::start("A").await;
    let b = App::start("B").await;
    let (proxy, addr) = proxy().await;
    proxy.set_backend(addr.port(), a.addr).expect("switch");
    let slow = tokio::spawn(get_once(addr, "/slow?ms=3000"));
    eventually("the slow request is in flight", || {
        proxy
            .stats()
            .backend(a.addr)
            .is_some_and(|backend| backend.requests == 1)
    })
    .await;
    proxy.set_backend(addr.port(), b.addr).expect("switch");

    let report = proxy
        .drain(a.addr, Duration::from_millis(200))
        .await
        .expect("drain");
    assert_eq!(
        (report.addr, report.requests, report.tunnels),
        (a.addr, 1, 0),
        "{report}"
    );
    assert!(!report.is_complete());
    assert!(
        report.waited >= Duration::from_millis(200) && report.waited < Duration::from_secs(2),
        "{report}"
    );
    assert!(
        report
            .to_string()
            .contains("still had 1 request and 0 tunnels open after"),
        "{report}"
    );
    slow.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_backend_cannot_be_drained() {
    let a = App::start("A").await;
    let (proxy, addr) = proxy().await;
    proxy.set_backend(addr.port(), a.addr).expect("switch");
    let error = proxy
        .drain(a.addr, Duration::from_secs(1))
        .await
        .expect_err("draining the live backend");
    assert!(matches!(error, ProxyError::DrainLive { .. }));
    assert_eq!(
        error.to_string(),
        format!(
            "refused to drain `{}`: port `{}` routes to it; switch it away first",
            a.addr,
            addr.port()
        )
    );
    // A port the proxy does not listen on is an error too.
    let error = proxy.set_backend(1, a.addr).expect_err("unknown port");
    assert_eq!(
        error.to_string(),
        "failed to route port `1`: the proxy does not listen on it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_goes_to_the_backend_live_at_connect_time() {
    let a = apps::start_line_server("A").await;
    let b = apps::start_line_server("B").await;
    let (proxy, addr) = proxy().await;
    proxy.set_backend(addr.port(), a).expect("switch");

    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut on_a = BufReader::new(stream);
    assert_eq!(line_exchange(&mut on_a, "hello").await, "A: hello\n");
    proxy.set_backend(addr.port(), b).expect("switch");
    // The open connection stays with A; a new one goes to B.
    assert_eq!(
        line_exchange(&mut on_a, "still there?").await,
        "A: still there?\n"
    );
    let mut on_b = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
    assert_eq!(line_exchange(&mut on_b, "hi").await, "B: hi\n");

    let report = proxy
        .drain(a, Duration::from_millis(100))
        .await
        .expect("drain");
    assert_eq!((report.requests, report.tunnels), (0, 1), "{report}");
    drop(on_a);
    let report = proxy.drain(a, Duration::from_secs(5)).await.expect("drain");
    assert!(report.is_complete(), "{report}");
    let stats = proxy.stats();
    assert_eq!(
        (stats.tcp, stats.requests, stats.failures()),
        (2, 0, 0),
        "{stats}"
    );
}

async fn line_exchange(stream: &mut BufReader<TcpStream>, line: &str) -> String {
    stream
        .get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .await
        .expect("write");
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_line(&mut answer))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_speaks_first_is_reached_after_the_sniff_timeout() {
    let server = apps::start_greeting_server("smtp").await;
    let config = ProxyConfig {
        sniff_timeout: Duration::from_millis(100),
        ..ProxyConfig::default()
    };
    let (proxy, addr) = proxy_with(config).await;
    proxy.set_backend(addr.port(), server).expect("switch");
    let mut stream = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
    let mut greeting = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_line(&mut greeting))
        .await
        .expect("a greeting within 5 s")
        .expect("read");
    assert_eq!(greeting, "220 smtp\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_connection_survives_a_switch() {
    let a = App::start("A").await;
    let b = App::start("B").await;
    let (proxy, addr) = proxy().await;
    proxy.set_backend(addr.port(), a.addr).expect("switch");

    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut tunnel = BufReader::new(stream);
    tunnel
        .get_mut()
        .write_all(b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .expect("upgrade request");
    let head = apps::read_head(&mut tunnel).await.expect("response head");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    let mut greeting = String::new();
    tunnel.read_line(&mut greeting).await.expect("greeting");
    assert_eq!(greeting, "A\n");

    proxy.set_backend(addr.port(), b.addr).expect("switch");
    assert_eq!(
        get_once(addr, "/").await.expect("request").body,
        "backend B"
    );
    assert_eq!(line_exchange(&mut tunnel, "ping").await, "ping\n");

    let report = proxy
        .drain(a.addr, Duration::from_millis(100))
        .await
        .expect("drain");
    assert_eq!((report.requests, report.tunnels), (0, 1), "{report}");
    drop(tunnel);
    let report = proxy
        .drain(a.addr, Duration::from_secs(5))
        .await
        .expect("drain");
    assert!(report.is_complete(), "{report}");
    assert_eq!(proxy.stats().upgrades, 1);
}

/// Twenty switches between two addresses, the old app killed after each drain and a new one
/// started there for the next switch, while clients keep requesting: keep-alive GETs, GETs on
/// a new connection each, POSTs with a body, and slow GETs that a switch finds in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_switches_under_steady_load_fail_no_request() {
    const SWITCHES: usize = 20;
    let first = apps::free_addr();
    let second = loop {
        let addr = apps::free_addr();
        if addr != first {
            break addr;
        }
    };
    let addrs = [first, second];
    let (proxy, addr) = proxy().await;
    let mut live = App::start_on("0", addrs[0]).await;
    proxy.set_backend(addr.port(), live.addr).expect("switch");

    let mut found_in_flight = 0;
    let done = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for kind in [
        Load::KeepAlive,
        Load::NewConnections,
        Load::Posts,
        Load::Slow,
        Load::Slow,
    ] {
        clients.push(tokio::spawn(load(
            addr,
            kind,
            Arc::clone(&done),
            Arc::clone(&served),
        )));
    }

    for switch in 1..=SWITCHES {
        let next = App::start_on(&switch.to_string(), addrs[switch % 2]).await;
        let old = proxy
            .set_backend(addr.port(), next.addr)
            .expect("switch")
            .expect("an old backend");
        let before = served.load(Ordering::SeqCst);
        found_in_flight += proxy
            .stats()
            .backend(old)
            .map_or(0, |backend| backend.requests);
        let report = proxy
            .drain(old, Duration::from_secs(5))
            .await
            .expect("drain");
        assert!(report.is_complete(), "switch {switch}: {report}");
        // Killed, not stopped gracefully: after a complete drain, nothing of ours is left
        // to cut.
        std::mem::replace(&mut live, next).kill().await;
        eventually("clients made progress on the new backend", || {
            served.load(Ordering::SeqCst) > before + 8
        })
        .await;
    }
    done.store(true, Ordering::SeqCst);

    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.await.expect("client task"));
    }
    let served = served.load(Ordering::SeqCst);
    assert!(
        failures.is_empty(),
        "{} of {served} failed: {failures:?}",
        failures.len()
    );
    // Each switch waited for progress, and some found requests to drain.
    assert!(found_in_flight > 0, "no switch found a request in flight");
    let answer = get_once(addr, "/").await.expect("final request");
    assert_eq!(answer.body, format!("backend {SWITCHES}"));
    let stats = proxy.stats();
    assert_eq!(stats.failures(), 0, "{stats}");
    live.stop().await;
}

#[derive(Clone, Copy, Debug)]
enum Load {
    KeepAlive,
    NewConnections,
    Posts,
    /// 20 ms each, so that a switch nearly always finds one in flight.
    Slow,
}

/// Requests until `done` (or 50 000 requests); returns the failures.
async fn load(
    addr: SocketAddr,
    kind: Load,
    done: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut client = Client::connect(addr).await.expect("connect");
    for n in 0..50_000 {
        if done.load(Ordering::SeqCst) {
            break;
        }
        let result = match kind {
            Load::KeepAlive => client.get("/").await.map_err(|error| error.to_string()),
            Load::Slow => client
                .get("/slow?ms=20")
                .await
                .map_err(|error| error.to_string()),
            Load::NewConnections => get_once(addr, "/").await,
            Load::Posts => {
                let body = format!("order {n}");
                let request = Request::post("/echo")
                    .body(Full::new(Bytes::from(body.clone())))
                    .expect("request");
                client
                    .send(request)
                    .await
                    .map_err(|error| error.to_string())
                    .and_then(|answer| {
                        if answer.body == body {
                            Ok(answer)
                        } else {
                            Err(format!("echo of {body:?} came back as {:?}", answer.body))
                        }
                    })
            }
        };
        match result {
            Ok(answer)
                if answer.status == StatusCode::OK
                    && (matches!(kind, Load::Posts) || answer.body.starts_with("backend ")) =>
            {
                served.fetch_add(1, Ordering::SeqCst);
            }
            Ok(answer) => failures.push(format!("{kind:?}: {} {}", answer.status, answer.body)),
            Err(error) => failures.push(format!("{kind:?}: {error}")),
        }
        if client.is_closed() {
            failures.push(format!(
                "{kind:?}: the proxy closed a keep-alive connection"
            ));
            client = Client::connect(addr).await.expect("reconnect");
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_finishes_requests_in_flight_and_frees_the_port() {
    let a = App::start("A").await;
    let (proxy, addr) = proxy().await;
    proxy.set_backend(addr.port(), a.addr).expect("switch");
    let mut idle = Client::connect(addr).await.expect("connect");
    idle.get("/").await.expect("request");
    let slow = tokio::spawn(get_once(addr, "/slow?ms=300"));
    eventually("the slow request is in flight", || {
        proxy.stats().requests == 2
    })
    .await;

    let report = proxy.shutdown(Duration::from_secs(5)).await;
    assert_eq!(report.cut, 0, "{report:?}");
    assert_eq!(
        slow.await.expect("task").expect("slow request").body,
        "backend A (slow)"
    );
    // The idle keep-alive connection was closed rather than left to fail later.
    eventually("the idle client connection is closed", || idle.is_closed()).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the port still accepts"
    );
    assert!(matches!(
        proxy.listen(addr),
        Err(ProxyError::ShutDown { .. })
    ));
    // Again: nothing left to wait for.
    assert_eq!(proxy.shutdown(Duration::from_secs(5)).await.cut, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_cuts_tunnels_after_its_grace_period() {
    let a = App::start("A").await;
    let lines = apps::start_line_server("L").await;
    let (proxy, http_addr) = proxy().await;
    let tcp_addr = proxy
        .listen("127.0.0.1:0".parse().expect("address"))
        .expect("listen");
    proxy.set_backend(http_addr.port(), a.addr).expect("switch");
    proxy.set_backend(tcp_addr.port(), lines).expect("switch");
    let mut upgraded = BufReader::new(TcpStream::connect(http_addr).await.expect("connect"));
    upgraded
        .get_mut()
        .write_all(b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .expect("upgrade request");
    apps::read_head(&mut upgraded).await.expect("response head");
    let mut tcp = BufReader::new(TcpStream::connect(tcp_addr).await.expect("connect"));
    assert_eq!(line_exchange(&mut tcp, "hello").await, "L: hello\n");

    let report = proxy.shutdown(Duration::from_millis(100)).await;
    assert_eq!(report.cut, 2, "{report:?}");
    for stream in [&mut upgraded, &mut tcp] {
        let mut rest = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "a tunnel outlived the shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_proxy_serves_again_within_a_second() {
    let a = App::start("A").await;
    let (proxy, addr) = proxy().await;
    proxy.set_backend(addr.port(), a.addr).expect("switch");
    // Established connections on the port, as a busy daemon has when it restarts.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut client = Client::connect(addr).await.expect("connect");
        client.get("/").await.expect("request");
        clients.push(client);
    }

    let started = Instant::now();
    proxy.shutdown(Duration::from_secs(5)).await;
    drop(proxy);
    let successor = Proxy::new(ProxyConfig::default());
    successor.listen(addr).expect("bind the same port at once");
    successor.set_backend(addr.port(), a.addr).expect("switch");
    loop {
        if let Ok(answer) = get_once(addr, "/").await
            && answer.status == StatusCode::OK
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no answer within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_drain_report_says_what_it_found() {
    let report = DrainReport {
        addr: "10.0.0.5:8000".parse().expect("address"),
        requests: 0,
        tunnels: 0,
        waited: Duration::from_millis(1234),
    };
    assert_eq!(report.to_string(), "`10.0.0.5:8000` drained in 1.2s");
}

#[test]
fn a_forwarded_element_quotes_what_is_not_a_token() {
    use super::http::forwarded_element;
    assert_eq!(
        forwarded_element("2001:db8::7", "http", Some("shop.example:8080")),
        "for=\"[2001:db8::7]\";proto=http;host=\"shop.example:8080\""
    );
    assert_eq!(
        forwarded_element("10.0.0.1", "https", None),
        "for=10.0.0.1;proto=https"
    );
}

#[test]
fn an_extended_connect_becomes_the_http_1_upgrade_an_app_expects() {
    use super::http::{ReqBody, as_http1_upgrade};
    let mut request = hyper::Request::connect("/chat")
        .body(ReqBody::Empty)
        .expect("request");
    as_http1_upgrade(&mut request, "websocket");
    assert_eq!(request.method(), hyper::Method::GET);
    let headers = request.headers();
    assert_eq!(headers["upgrade"], "websocket");
    assert_eq!(headers["connection"], "upgrade");
    let key = headers["sec-websocket-key"].to_str().expect("ascii");
    assert_eq!(key.len(), 24, "16 bytes in base64: {key}");
    let mut again = hyper::Request::connect("/chat")
        .body(ReqBody::Empty)
        .expect("request");
    as_http1_upgrade(&mut again, "websocket");
    assert_ne!(
        again.headers()["sec-websocket-key"],
        key,
        "a key of its own each time"
    );
}
