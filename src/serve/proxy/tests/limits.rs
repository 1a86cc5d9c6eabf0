//! The proxy's bounds: at its connection cap it stops accepting and lets the kernel's backlog
//! hold new connections; an upgraded tunnel keeps its connection's slot; a connection silent
//! both ways is closed; a slow client, an oversized request head and an app that never
//! answers are cut off.

use std::time::Duration;

use hyper::StatusCode;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::apps::{self, App, get_once};
use super::{ProxyConfig, eventually, proxy_with};

/// A request that must not be answered while the proxy is at its cap: it is still waiting
/// after `within`.
async fn still_waiting<T>(task: &mut tokio::task::JoinHandle<T>, within: Duration) {
    assert!(
        tokio::time::timeout(within, task).await.is_err(),
        "answered while the proxy was at its cap"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_new_connections_wait_in_the_backlog_until_a_slot_frees() {
    let a = App::start("A").await;
    let config = ProxyConfig {
        max_connections: 2,
        // The idle connections stay in sniffing for the whole test.
        sniff_timeout: Duration::from_secs(30),
        ..ProxyConfig::default()
    };
    let (proxy, addr) = proxy_with(config).await;
    proxy.set_backend(addr.port(), a.addr).expect("switch");
    let first_idle = TcpStream::connect(addr).await.expect("connect");
    let _second_idle = TcpStream::connect(addr).await.expect("connect");
    eventually("both idle connections are accepted", || {
        proxy.stats().connections == 2
    })
    .await;

    let mut waiting = tokio::spawn(get_once(addr, "/"));
    still_waiting(&mut waiting, Duration::from_millis(300)).await;
    assert_eq!(proxy.stats().connections, 2, "nothing more was accepted");

    drop(first_idle);
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("answered once a slot was free")
        .expect("task")
        .expect("request");
    assert_eq!(answer.body, "backend A");
    assert_eq!(proxy.stats().failures(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgraded_tunnel_keeps_its_connections_slot() {
    let a = App::start("A").await;
    let config = ProxyConfig {
        max_connections: 1,
        ..ProxyConfig::default()
    };
    let (proxy, addr) = proxy_with(config).await;
    proxy.set_backend(addr.port(), a.addr).expect("switch");
    let mut tunnel = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
    tunnel
        .get_mut()
        .write_all(b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .expect("upgrade request");
    let head = apps::read_head(&mut tunnel).await.expect("response head");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut greeting = String::new();
    tunnel.read_line(&mut greeting).await.expect("greeting");
    assert_eq!(greeting, "A\n");

    let mut waiting = tokio::spawn(get_once(addr, "/"));
    still_waiting(&mut waiting, Duration::from_millis(300)).await;

    drop(tunnel);
    let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("answered once the tunnel closed")
        .expect("task")
        .expect("request");
    assert_eq!(answer.body, "backend A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_silent_both_ways_is_closed_and_frees_its_slot() {
    let a = App::start("A").await;
    let config = ProxyConfig {
        max_connections: 1,
        sniff_timeout: Duration::from_millis(100),
        silent_timeout: Duration::from_millis(300),
        ..ProxyConfig::default()
    };
    let (proxy, addr) = proxy_with(config).await;
    proxy.set_backend(addr.port(), a.addr).expect("switch");
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest))
        .await
        .expect("closed within 5 s");
    assert!(read.is_ok_and(|n| n == 0), "nothing was sent: {rest:?}");
    assert_eq!(proxy.stats().silent_closed, 1);
    assert_eq!(
        get_once(addr, "/").await.expect("request").body,
        "backend A"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_speaks_first_is_not_silent() {
    let server = apps::start_greeting_server("smtp").await;
    let config = ProxyConfig {
        sniff_timeout: Duration::from_millis(100),
        silent_timeout: Duration::from_millis(300),
        ..ProxyConfig::default()
    };
    let (proxy, addr) = proxy_with(config).await;
    proxy.set_backend(addr.port(), server).expect("switch");
    let mut stream = BufReader::new(TcpStream::connect(addr).await.expect("connect"));
    let mut greeting = String::new();
    stream.read_line(&mut greeting).await.expect("greeting");
    assert_eq!(greeting, "220 smtp\n");
    // Well past the silent timeout, the tunnel is still open.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(proxy.stats().silent_closed, 0);
    assert_eq!(proxy.stats().open_connections, 1);
}

/// An app that accepts and never answers costs its client `proxy_timeout`, then a `504`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_never_answers_gets_its_client_a_504() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let backend = silent.local_addr().expect("address");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let config = ProxyConfig {
        upstream_timeout: Duration::from_millis(300),
        ..ProxyConfig::default()
    };
    let (proxy, addr) = proxy_with(config).await;
    proxy.set_backend(addr.port(), backend).expect("switch");
    let answer = tokio::time::timeout(Duration::from_secs(5), get_once(addr, "/"))
        .await
        .expect("answered within 5 s")
        .expect("request");
    assert_eq!(
        answer.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        answer.body
    );
    assert!(answer.body.contains("within 0.3s"), "{}", answer.body);
    held.abort();
}

/// A client that dribbles its request head is cut off after `header_read_timeout`, and one
/// that sends a head too large gets `431`; both free their slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_oversized_request_heads_are_cut_off() {
    let a = App::start("A").await;
    let config = ProxyConfig {
        max_connections: 1,
        header_read_timeout: Duration::from_millis(300),
        max_header_bytes: 16 << 10,
        ..ProxyConfig::default()
    };
    let (proxy, addr) = proxy_with(config).await;
    proxy.set_backend(addr.port(), a.addr).expect("switch");

    let mut slow = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest))
        .await
        .expect("closed within 5 s")
        .expect("read");

    let mut big = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(32 << 10)
    );
    let _ = big.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), big.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    drop(big);

    assert_eq!(
        get_once(addr, "/").await.expect("request").body,
        "backend A",
        "the slot is free again"
    );
}
