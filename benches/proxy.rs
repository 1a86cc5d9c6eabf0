//! What the reverse proxy of `deploy serve` costs: latency (p50/p99) and throughput through it
//! against the same app reached directly, on loopback, bounded in time.
//!
//! Run: `cargo bench --bench proxy` (release build; about 30 s). The app, the proxy and the
//! load generator each run on a single-threaded runtime of their own, as three processes
//! would; on a machine with fewer than three free cores they compete for CPU, which the
//! throughput numbers then show. The CPU time the proxy's thread spends per request does not
//! depend on that, so it is printed too.
//!
//! Three apps: one that answers at once (the worst case for the proxy, whose work is then as
//! large as the app's), one that waits 1 ms per request (a database round trip), and one that
//! computes for 250 µs per request (a small view in an interpreted web framework).

// The proxy is compiled into this benchmark from its source: `deploy` is a binary crate.
#[allow(dead_code, unused_imports)]
#[path = "../src/serve/proxy/mod.rs"]
mod proxy;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

use proxy::{Proxy, ProxyConfig};

/// How long each measurement runs, after a short warm-up.
const MEASURE: Duration = Duration::from_secs(2);
const WARM_UP: Duration = Duration::from_millis(300);
/// Concurrent keep-alive connections for the throughput runs.
const CONNECTIONS: usize = 32;

fn main() {
    let apps = [
        ("app answers at once", App::start(Work::None)),
        (
            "app waits 1 ms per request",
            App::start(Work::Wait(Duration::from_millis(1))),
        ),
        (
            "app computes 250 µs per request",
            App::start(Work::Compute(Duration::from_micros(250))),
        ),
    ];
    let proxy_runtime = single_threaded();
    let proxy = Proxy::new(ProxyConfig::default());
    let via_proxy: Vec<SocketAddr> = apps
        .iter()
        .map(|(_, app)| {
            proxy_runtime.block_on(async {
                let addr = proxy
                    .listen("127.0.0.1:0".parse().expect("address"))
                    .expect("listen");
                proxy.set_backend(addr.port(), app.addr).expect("switch");
                addr
            })
        })
        .collect();
    // The proxy's tasks need their runtime driven: a thread of its own parks in it.
    let (stop_proxy, proxy_stopped) = tokio::sync::oneshot::channel::<()>();
    let (send_tid, receive_tid) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new().name("proxy".to_owned());
    let proxy_thread = thread
        .spawn(move || {
            send_tid.send(current_tid()).expect("send the thread id");
            proxy_runtime.block_on(async {
                let _ = proxy_stopped.await;
            });
        })
        .expect("spawn the proxy's thread");
    let proxy_tid = receive_tid.recv().expect("the proxy thread's id");

    let load = single_threaded();
    let (name, app) = &apps[0];
    println!("1 connection, sequential requests (latency), {name}:");
    let direct = load.block_on(run(app.addr, 1, [proxy_tid, app.tid]));
    let proxied = load.block_on(run(via_proxy[0], 1, [proxy_tid, app.tid]));
    print_pair(&direct, &proxied);
    for ((name, app), via_proxy) in apps.iter().zip(&via_proxy) {
        println!("{CONNECTIONS} connections (throughput), {name}:");
        let direct = load.block_on(run(app.addr, CONNECTIONS, [proxy_tid, app.tid]));
        let proxied = load.block_on(run(*via_proxy, CONNECTIONS, [proxy_tid, app.tid]));
        print_pair(&direct, &proxied);
    }

    let stats = proxy.stats();
    println!("proxy counters: {stats}");
    assert_eq!(stats.failures(), 0, "the proxy failed requests");
    let _ = stop_proxy.send(());
    proxy_thread.join().expect("proxy thread");

    restart_gap(apps[0].1.addr);
}

fn single_threaded() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// What the app does before it answers.
#[derive(Clone, Copy)]
enum Work {
    None,
    /// Waits without using the CPU, as for a database.
    Wait(Duration),
    /// Keeps its thread busy, as an interpreter would.
    Compute(Duration),
}

/// A hyper app on a thread of its own, answering `hello world` after its `Work`.
struct App {
    addr: SocketAddr,
    tid: u32,
}

impl App {
    fn start(work: Work) -> Self {
        let runtime = single_threaded();
        let listener =
            runtime.block_on(async { TcpListener::bind("127.0.0.1:0").await.expect("bind") });
        let addr = listener.local_addr().expect("address");
        let (send_tid, receive_tid) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("app".to_owned());
        thread
            .spawn(move || {
                send_tid.send(current_tid()).expect("send the thread id");
                runtime.block_on(async move {
                    loop {
                        let (stream, _) = listener.accept().await.expect("accept");
                        stream.set_nodelay(true).expect("nodelay");
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |_request| async move {
                                match work {
                                    Work::None => {}
                                    Work::Wait(delay) => tokio::time::sleep(delay).await,
                                    Work::Compute(busy) => {
                                        let until = Instant::now() + busy;
                                        while Instant::now() < until {
                                            std::hint::spin_loop();
                                        }
                                    }
                                }
                                Ok::<_, Infallible>(hyper::Response::new(Full::new(
                                    Bytes::from_static(b"hello world"),
                                )))
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                });
            })
            .expect("spawn the app's thread");
        let tid = receive_tid.recv().expect("the app thread's id");
        Self { addr, tid }
    }
}

struct Measured {
    requests: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// CPU time of the proxy's thread while measuring.
    proxy_cpu: Duration,
    /// CPU time of the app's thread while measuring.
    app_cpu: Duration,
}

impl Measured {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: usize) -> Duration {
        self.latencies[(self.latencies.len() * p / 100).min(self.latencies.len() - 1)]
    }
}

/// `connections` keep-alive clients request `/` as fast as they can: a warm-up, then
/// `MEASURE`.
/// `threads`: the proxy's and the app's, whose CPU time is measured.
async fn run(addr: SocketAddr, connections: usize, threads: [u32; 2]) -> Measured {
    let measuring = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..connections {
        let measuring = Arc::clone(&measuring);
        let done = Arc::clone(&done);
        clients.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .expect("handshake");
            let connection = tokio::spawn(connection);
            let mut latencies = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let request = Request::get("/")
                    .header("host", "bench")
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let started = Instant::now();
                sender.ready().await.expect("ready");
                let response = sender.send_request(request).await.expect("response");
                assert!(response.status().is_success(), "{}", response.status());
                response.into_body().collect().await.expect("body");
                if measuring.load(Ordering::Relaxed) {
                    latencies.push(started.elapsed());
                }
            }
            // Close the connection before the next run starts.
            drop(sender);
            let _ = connection.await;
            latencies
        }));
    }
    tokio::time::sleep(WARM_UP).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let cpu_before = threads.map(thread_cpu);
    tokio::time::sleep(MEASURE).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let cpu_after = threads.map(thread_cpu);
    done.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for client in clients {
        latencies.extend(client.await.expect("client"));
    }
    latencies.sort_unstable();
    Measured {
        requests: latencies.len(),
        elapsed,
        latencies,
        proxy_cpu: cpu_after[0] - cpu_before[0],
        app_cpu: cpu_after[1] - cpu_before[1],
    }
}

/// The calling thread's id, for `thread_cpu`.
fn current_tid() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
    link.file_name()
        .and_then(|tid| tid.to_str())
        .and_then(|tid| tid.parse().ok())
        .expect("a thread id")
}

/// CPU time a thread of this process has used (`/proc/self/task/<tid>/schedstat`, in ns).
fn thread_cpu(tid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .expect("schedstat of a thread");
    let nanos = stat
        .split_whitespace()
        .next()
        .and_then(|nanos| nanos.parse().ok())
        .expect("CPU time in schedstat");
    Duration::from_nanos(nanos)
}

fn print_pair(direct: &Measured, proxied: &Measured) {
    for (name, measured) in [("direct ", direct), ("proxied", proxied)] {
        println!(
            "  {name}  {:>9.0} req/s   p50 {:>7.1} µs   p99 {:>7.1} µs   ({} requests; CPU per request: app {:.1} µs, proxy {:.1} µs)",
            measured.per_second(),
            micros(measured.percentile(50)),
            micros(measured.percentile(99)),
            measured.requests,
            micros(measured.app_cpu) / measured.requests as f64,
            micros(measured.proxy_cpu) / measured.requests as f64,
        );
    }
    println!(
        "  proxy: {:+.1}% throughput, {:+.1} µs at p50, {:+.1} µs at p99",
        (proxied.per_second() / direct.per_second() - 1.0) * 100.0,
        micros(proxied.percentile(50)) - micros(direct.percentile(50)),
        micros(proxied.percentile(99)) - micros(direct.percentile(99)),
    );
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// From `shutdown` of one proxy to the first answer through its successor on the same port,
/// as when the daemon restarts (without the process start and the reading of Docker state).
fn restart_gap(app: SocketAddr) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let first = Proxy::new(ProxyConfig::default());
        let addr = first
            .listen("127.0.0.1:0".parse().expect("address"))
            .expect("listen");
        first.set_backend(addr.port(), app).expect("switch");
        get(addr).await.expect("a request before the restart");
        let started = Instant::now();
        first.shutdown(Duration::from_secs(5)).await;
        drop(first);
        let successor = Proxy::new(ProxyConfig::default());
        successor.listen(addr).expect("bind the same port");
        successor.set_backend(addr.port(), app).expect("switch");
        while get(addr).await.is_err() {}
        println!(
            "restart: first answer through the successor {:.2} ms after shutdown began",
            started.elapsed().as_secs_f64() * 1e3
        );
    });
}

async fn get(addr: SocketAddr) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = Request::get("/")
        .header("host", "bench")
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    response.into_body().collect().await?;
    Ok(())
}
