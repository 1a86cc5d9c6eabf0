//! Hostnames through `deploy serve`: real pushes, the real engine, the daemon's HTTP and
//! HTTPS listeners with certificates from a test CA, checked with curl and a TLS client.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Stack;
use common::ca::Ca;
use common::daemon::Daemon;
use rustls::pki_types::{CertificateDer, ServerName};

/// What an HTTPS request came back with, and the certificate the handshake presented.
struct Answer {
    status: u16,
    body: String,
    cert: CertificateDer<'static>,
}

/// `GET /` for `host` over a new TLS connection to 127.0.0.1:`port`.
fn https_get(client: &Arc<rustls::ClientConfig>, port: u16, host: &str) -> Result<Answer, String> {
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let conn =
        rustls::ClientConnection::new(Arc::clone(client), name).map_err(|e| e.to_string())?;
    let socket = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, socket);
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    if let Err(e) = tls.read_to_end(&mut answer) {
        // A server that closes without `close_notify` after a whole answer is fine here.
        if answer.is_empty() || e.kind() != std::io::ErrorKind::UnexpectedEof {
            return Err(e.to_string());
        }
    }
    let cert = (tls.conn.peer_certificates()).ok_or("no certificate")?[0].clone();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = (answer.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {answer:?}"))?;
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Ok(Answer { status, body, cert })
}

fn curl(args: &[&str]) -> String {
    common::curl(args).unwrap_or_else(|e| panic!("curl {args:?}: {e}"))
}

/// New TLS connections to `host`, one request each, from another thread, bounded in count
/// and time; counts what failed.
struct TlsLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    handle: std::thread::JoinHandle<Vec<String>>,
}

impl TlsLoad {
    fn start(client: Arc<rustls::ClientConfig>, port: u16, host: &'static str) -> Self {
        let (stop, ok) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, o) = (stop.clone(), ok.clone());
        let handle = std::thread::spawn(move || {
            let started = Instant::now();
            let mut errors = Vec::new();
            for _ in 0..20_000 {
                if s.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(600) {
                    break;
                }
                match https_get(&client, port, host) {
                    Ok(a) if a.status == 200 => {
                        o.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(a) => {
                        errors.push(format!("{:?}: {} {}", started.elapsed(), a.status, a.body))
                    }
                    Err(e) => errors.push(format!("{:?}: {e}", started.elapsed())),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            errors
        });
        Self { stop, ok, handle }
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let errors = self.handle.join().unwrap();
        (self.ok.load(Ordering::SeqCst), errors)
    }
}

/// Waits until `host` answers over HTTPS with `want` in its page.
fn wait_https(client: &Arc<rustls::ClientConfig>, port: u16, host: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    while Instant::now() < deadline {
        match https_get(client, port, host) {
            Ok(a) if a.body.contains(want) => return,
            Ok(a) => last = format!("{} {}", a.status, a.body),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{host} never answered `{want}` over HTTPS; last: {last}");
}

#[test]
fn hostnames_are_served_over_https_by_sni_and_a_deploy_or_a_new_certificate_fails_no_request() {
    let stack = Stack::web("https");
    let certs = stack.base.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let ca_pem = stack.base.path().join("ca.pem");
    let ca = Ca::new(&ca_pem);
    let first = ca.issue(&certs, "shop.test.pem", "shop.test");
    ca.issue(&certs, "_wildcard.apps.test.pem", "*.apps.test");
    stack.add_settings("hostnames: [shop.test, www.apps.test, Plain.Test]\n");
    let (http, https) = (common::free_port(), common::free_port());
    let _daemon = Daemon::start_hosts(&stack, (http, https), &certs, &[]);
    stack.write("index.html", "version: v1\n");
    stack.commit("v1");
    let push = stack.push("alice");
    assert!(push.pushed, "{}", push.output);
    let client = ca.client();
    wait_https(&client, https, "shop.test", "version: v1");

    // curl with the test CA, the names resolved to loopback: HTTP/2 by ALPN, the wildcard
    // certificate, the redirect, a hostname without a certificate over HTTP, unknown hosts.
    let resolve = |host: &str, port: u16| format!("{host}:{port}:127.0.0.1");
    let ca_arg = ca_pem.to_str().unwrap();
    let h2 = curl(&[
        "--http2",
        "--cacert",
        ca_arg,
        "--resolve",
        &resolve("shop.test", https),
        "-w",
        "\n%{http_version}",
        &format!("https://shop.test:{https}/"),
    ]);
    assert_eq!(h2, "version: v1\n\n2", "HTTP/2 over TLS");
    let wildcard = curl(&[
        "--cacert",
        ca_arg,
        "--resolve",
        &resolve("www.apps.test", https),
        &format!("https://www.apps.test:{https}/"),
    ]);
    assert_eq!(wildcard, "version: v1\n");
    let redirect = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "--resolve",
        &resolve("shop.test", http),
        &format!("http://shop.test:{http}/a?b=c"),
    ]);
    assert_eq!(redirect, format!("308 https://shop.test:{https}/a?b=c"));
    let plain = curl(&[
        "--resolve",
        &resolve("plain.test", http),
        &format!("http://plain.test:{http}/"),
    ]);
    assert_eq!(
        plain, "version: v1\n",
        "a hostname without a certificate is served over HTTP"
    );
    let unknown = curl(&[
        "-w",
        "%{http_code}",
        "--resolve",
        &resolve("other.test", http),
        &format!("http://other.test:{http}/"),
    ]);
    assert_eq!(unknown, "not found\n404", "an unknown host names no app");
    let unknown = https_get(&client, https, "nope.apps.test").unwrap();
    assert_eq!(
        (unknown.status, unknown.body.as_str()),
        (404, "not found\n")
    );

    // `deploy status` says which hostnames have HTTPS (the certificates directory from the
    // host-wide file).
    let serve_yml = stack.base.path().join("serve.yml");
    std::fs::write(&serve_yml, format!("certs: {}\n", certs.display())).unwrap();
    let status = common::run(
        Command::new(common::DEPLOY)
            .args(["status", "--root"])
            .arg(&stack.root)
            .env("DEPLOY_SERVE_CONFIG", &serve_yml),
    );
    let status = common::text(&status);
    assert!(status.contains("shop.test (https)"), "{status}");
    assert!(
        status.contains(&format!(
            "plain.test (http only: no certificate for it in {})",
            certs.display()
        )),
        "{status}"
    );

    // Under load over HTTPS, a new handshake for every request: a deploy, then a new
    // certificate for the hostname.
    let load = TlsLoad::start(Arc::clone(&client), https, "shop.test");
    stack.write("index.html", "version: v2\n");
    stack.commit("v2");
    let push = stack.push("alice");
    assert!(push.pushed, "{}", push.output);
    wait_https(&client, https, "shop.test", "version: v2");
    let second = ca.issue(&certs, "shop.test.pem", "shop.test");
    assert_ne!(first, second);
    let deadline = Instant::now() + Duration::from_secs(30);
    while https_get(&client, https, "shop.test").map(|a| a.cert) != Ok(second.clone()) {
        assert!(
            Instant::now() < deadline,
            "the new certificate never served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, errors) = load.finish();
    assert!(
        errors.is_empty(),
        "failed requests: {errors:?} ({ok} succeeded)"
    );
    assert!(ok > 20, "the load ran ({ok} requests)");
}

/// Waits until `stack`'s root has its control socket (its daemon serves it).
fn wait_socket(stack: &Stack) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stack.root.join("deploy.sock").exists() {
        assert!(
            Instant::now() < deadline,
            "{} was never served",
            stack.root.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Two roots and a staging environment, five hostnames in all, on one HTTPS port.
#[test]
fn one_daemon_serves_two_roots_on_one_https_port_and_refuses_a_hostname_claimed_twice() {
    let shop = Stack::web("hostsshop");
    let blog = Stack::web("hostsblog");
    // A root the daemon cannot serve (its settings do not parse) leaves the others serving.
    let broken = Stack::empty("hostsbroken");
    std::fs::write(broken.root.join("deploy.yml"), "no_such_key: 1\n").unwrap();
    let certs = shop.base.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    let ca_pem = shop.base.path().join("ca.pem");
    let ca = Ca::new(&ca_pem);
    ca.issue(&certs, "_wildcard.shop.test.pem", "*.shop.test");
    ca.issue(&certs, "shop.test.pem", "shop.test");
    ca.issue(&certs, "blog.test.pem", "blog.test");
    ca.issue(&certs, "_wildcard.blog.test.pem", "*.blog.test");
    shop.add_settings("hostnames: [shop.test, www.shop.test]\n");
    // The blog's staging (branch `staging`, its own port) has a hostname of its own: five
    // hostnames in all.
    let _blog_staging = common::Cleanup(format!("{}-staging", blog.project));
    std::fs::write(
        blog.root.join("staging.env"),
        format!("WEB_PORT={}\n", common::free_port()),
    )
    .unwrap();
    blog.add_settings(
        "hostnames: [blog.test, www.blog.test]\nenvironments: {production: {branch: main}, staging: {branch: staging, hostnames: [staging.blog.test], env_file: staging.env}}\n",
    );
    let https = common::free_port();
    let (blog_root, broken_root) = (blog.root.to_str().unwrap(), broken.root.to_str().unwrap());
    let _daemon = Daemon::start_hosts(
        &shop,
        (common::free_port(), https),
        &certs,
        &["--root", blog_root, "--root", broken_root],
    );
    wait_socket(&blog);
    let deadline = Instant::now() + Duration::from_secs(30);
    let said = |log: &str| log.contains("this root is not served") && log.contains("no_such_key");
    while !said(&common::daemon::serve_log(&shop)) {
        assert!(
            Instant::now() < deadline,
            "{}",
            common::daemon::serve_log(&shop)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for (stack, page) in [(&shop, "shop v1"), (&blog, "blog v1")] {
        stack.write("index.html", &format!("version: {page}\n"));
        stack.commit(page);
        let push = stack.push("alice");
        assert!(push.pushed, "{}", push.output);
    }
    blog.write("index.html", "version: blog staging\n");
    blog.commit("blog staging");
    let push = blog.push_ref("HEAD:refs/heads/staging", "alice");
    assert!(push.output.contains("deployed"), "{}", push.output);
    let client = ca.client();
    for (host, page) in [
        ("shop.test", "shop v1"),
        ("www.shop.test", "shop v1"),
        ("blog.test", "blog v1"),
        ("www.blog.test", "blog v1"),
        ("staging.blog.test", "blog staging"),
    ] {
        wait_https(&client, https, host, &format!("version: {page}"));
    }
    let unknown = https_get(&client, https, "old.shop.test").unwrap();
    assert_eq!(
        (unknown.status, unknown.body.as_str()),
        (404, "not found\n")
    );

    // The blog asks for the shop's hostname: its deploy fails naming both roots, before
    // anything switches; both keep serving what they served.
    blog.add_setting("hostnames: [blog.test, shop.test]");
    blog.write("index.html", "version: blog v2\n");
    blog.commit("blog v2");
    let before = blog.container_ids();
    let load = TlsLoad::start(Arc::clone(&client), https, "blog.test");
    let push = blog.push("alice");
    let (ok, errors) = load.finish();
    assert!(
        errors.is_empty(),
        "the blog failed requests: {errors:?} ({ok} succeeded)"
    );
    assert_eq!(
        blog.container_ids(),
        before,
        "the blog's v1 container never stopped"
    );
    assert!(
        !push.pushed || !push.output.contains("deployed"),
        "{}",
        push.output
    );
    let said = format!(
        "hostname `shop.test` is routed by `{}` already, and `{}` asks for it too",
        shop.root.display(),
        blog.root.display()
    );
    assert!(push.output.contains(&said), "{}", push.output);
    wait_https(&client, https, "shop.test", "version: shop v1");
    wait_https(&client, https, "blog.test", "version: blog v1");

    // `deploy down` of the shop closes its hostnames (404, not 502); the blog serves on.
    let down = shop.deploy(&["down"]);
    assert!(down.status.success(), "{}", common::text(&down));
    let gone = https_get(&client, https, "www.shop.test").unwrap();
    assert_eq!((gone.status, gone.body.as_str()), (404, "not found\n"));
    wait_https(&client, https, "blog.test", "version: blog v1");
    wait_https(&client, https, "staging.blog.test", "version: blog staging");
}
