//! Ports with several backends: a service's replicas, taken in turn, skipping those that do
//! not answer.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::StatusCode;

use super::apps::{App, Client};
use super::{ProxyConfig, ProxyError, eventually, proxy, proxy_with};

/// How many of `count` requests on one keep-alive connection each backend answered.
async fn spread(client: &mut Client, count: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..count {
        let answer = client.get("/").await.expect("request");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        *seen.entry(answer.body).or_insert(0) += 1;
    }
    seen
}

fn counts(list: &[(&str, usize)]) -> BTreeMap<String, usize> {
    (list.iter())
        .map(|(name, n)| (format!("backend {name}"), *n))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_take_the_backends_in_turn() {
    let (a, b, c) = (
        App::start("A").await,
        App::start("B").await,
        App::start("C").await,
    );
    let (proxy, addr) = proxy().await;
    let replaced = proxy
        .set_backends(addr.port(), &[a.addr, b.addr, c.addr])
        .expect("switch");
    assert!(replaced.is_empty(), "{replaced:?}");
    let mut client = Client::connect(addr).await.expect("connect");
    let seen = spread(&mut client, 30).await;
    assert_eq!(seen, counts(&[("A", 10), ("B", 10), ("C", 10)]));
}

/// A backend that stops accepting costs no request: the one that finds it closed goes to
/// the next backend, and the probe keeps the rest away until it answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_stops_answering_is_skipped_until_it_answers() {
    let (a, b, c) = (
        App::start("A").await,
        App::start("B").await,
        App::start("C").await,
    );
    let config = ProxyConfig {
        probe_interval: Duration::from_millis(50),
        ..ProxyConfig::default()
    };
    let (proxy, addr) = proxy_with(config).await;
    proxy
        .set_backends(addr.port(), &[a.addr, b.addr, c.addr])
        .expect("switch");
    let b_addr = b.addr;
    b.stop().await;

    let mut client = Client::connect(addr).await.expect("connect");
    let seen = spread(&mut client, 30).await;
    assert_eq!(seen.get("backend B"), None, "{seen:?}");
    assert_eq!(seen.values().sum::<usize>(), 30);
    let stats = proxy.stats();
    assert_eq!(stats.bad_gateway, 0, "{stats}");
    assert!(!stats.backend(b_addr).expect("B").up, "{stats}");

    let _b = App::start_on("B", b_addr).await;
    eventually("the probe finds B answering", || {
        proxy.stats().backend(b_addr).is_some_and(|s| s.up)
    })
    .await;
    let seen = spread(&mut client, 30).await;
    assert_eq!(seen, counts(&[("A", 10), ("B", 10), ("C", 10)]));
    drop((a, c));
}

/// A deploy switches the whole set at once; the backends left out are drained, and one
/// still in the set cannot be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_replaces_the_set_and_names_what_to_drain() {
    let (a, b, c) = (
        App::start("A").await,
        App::start("B").await,
        App::start("C").await,
    );
    let (proxy, addr) = proxy().await;
    proxy
        .set_backends(addr.port(), &[a.addr, b.addr])
        .expect("switch");
    let replaced = proxy
        .set_backends(addr.port(), &[b.addr, c.addr])
        .expect("switch");
    assert_eq!(replaced, [a.addr]);
    assert_eq!(proxy.backends(addr.port()), [b.addr, c.addr]);
    let report = proxy
        .drain(a.addr, Duration::from_secs(5))
        .await
        .expect("drain");
    assert!(report.is_complete(), "{report}");
    let live = proxy.drain(b.addr, Duration::from_secs(5)).await;
    assert!(
        matches!(live, Err(ProxyError::DrainLive { .. })),
        "{live:?}"
    );
    let mut client = Client::connect(addr).await.expect("connect");
    let seen = spread(&mut client, 10).await;
    assert_eq!(seen, counts(&[("B", 5), ("C", 5)]));
}
