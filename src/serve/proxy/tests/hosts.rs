//! Routing by hostname on the HTTP and HTTPS listeners: unknown hosts, the redirect to
//! HTTPS, certificates by SNI (exact and wildcard) and their reload, HTTP/2 by ALPN, and an
//! upgrade through TLS.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::super::tls::Certs;
use super::super::{Proxy, ProxyConfig};
use super::apps::{App, Client};

/// A test CA, and leaf certificates it signs.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Its own name: a leaf named like its issuer looks self-signed to OpenSSL.
        params.distinguished_name = rcgen::DistinguishedName::new();
        (params.distinguished_name).push(rcgen::DnType::CommonName, "deploy test CA");
        let issuer =
            CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA");
        Self { issuer }
    }

    /// Writes `<dir>/<file>`: a new key and its certificate for `names`. Returns the
    /// certificate, to compare with what a handshake presents.
    fn issue(&self, dir: &Path, file: &str, names: &[&str]) -> CertificateDer<'static> {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let cert = (CertificateParams::new(names).expect("params"))
            .signed_by(&key, &self.issuer)
            .expect("sign");
        let pem = format!("{}{}{}", key.serialize_pem(), cert.pem(), self.issuer.pem());
        std::fs::write(dir.join(file), pem).expect("write the certificate");
        cert.der().clone()
    }

    fn client(&self, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }
}

struct Listening {
    proxy: Proxy,
    http: SocketAddr,
    https: SocketAddr,
    certs: Arc<Certs>,
}

async fn listening(dir: &Path) -> Listening {
    let certs = Certs::load(&[dir.to_path_buf()]);
    let proxy = Proxy::with_certs(ProxyConfig::default(), Some(Arc::clone(&certs)));
    let any = "127.0.0.1:0".parse().expect("address");
    let http = proxy.listen_hosts(any, false).expect("listen for HTTP");
    let https = proxy.listen_hosts(any, true).expect("listen for HTTPS");
    Listening {
        proxy,
        http,
        https,
        certs,
    }
}

async fn tls(
    ca: &Ca,
    addr: SocketAddr,
    host: &str,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(host.to_owned()).expect("server name");
    ca.client(alpn).connect(name, stream).await
}

/// `GET /` over HTTP/1.1 with `Host: host` on a connection of its own (`https`: over TLS).
async fn get(
    ca: &Ca,
    addr: SocketAddr,
    host: &str,
    https: bool,
    path: &str,
) -> (StatusCode, String, Option<String>) {
    let request = Request::get(path)
        .header("host", host)
        .body(Full::<Bytes>::default())
        .expect("request");
    let response = if https {
        let io = tls(ca, addr, host, &[b"http/1.1"])
            .await
            .expect("handshake");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .expect("http");
        tokio::spawn(connection);
        sender.send_request(request).await.expect("answer")
    } else {
        let mut client = Client::connect(addr).await.expect("connect");
        let answer = client.send(request).await.expect("answer");
        return (answer.status, answer.body, None);
    };
    let status = response.status();
    let location = (response.headers().get("location")).map(|l| l.to_str().unwrap().to_owned());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        String::from_utf8_lossy(&body).into_owned(),
        location,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_routed_by_hostname_and_unknown_hosts_get_404() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    ca.issue(dir.path(), "shop.test.pem", &["shop.test"]);
    ca.issue(dir.path(), "_wildcard.apps.test.pem", &["*.apps.test"]);
    let (a, b) = (App::start("A").await, App::start("B").await);
    let l = listening(dir.path()).await;
    l.proxy.set_host_backends("shop.test", &[a.addr], true);
    l.proxy.set_host_backends("www.apps.test", &[b.addr], false);
    l.proxy.set_host_backends("plain.test", &[b.addr], true);

    // HTTP: a host with a certificate goes to HTTPS, on the HTTPS listener's port, path and
    // query kept; one without (or with the redirect off) is served.
    let (status, _, _) = get(&ca, l.http, "shop.test", false, "/a?b=c").await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    let mut client = Client::connect(l.http).await.expect("connect");
    let redirect = client
        .send(
            Request::get("/a?b=c")
                .header("host", "SHOP.test:80")
                .body(Full::default())
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(
        redirect.body,
        format!("moved to https://shop.test:{}/a?b=c\n", l.https.port())
    );
    assert_eq!(
        get(&ca, l.http, "plain.test", false, "/").await.1,
        "backend B"
    );
    assert_eq!(
        get(&ca, l.http, "www.apps.test", false, "/").await.1,
        "backend B"
    );
    let (status, body, _) = get(&ca, l.http, "other.test", false, "/").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "not found\n")
    );

    // HTTPS: the exact certificate, then the wildcard; a covered but unrouted host is 404.
    assert_eq!(
        get(&ca, l.https, "shop.test", true, "/").await.1,
        "backend A"
    );
    assert_eq!(
        get(&ca, l.https, "www.apps.test", true, "/").await.1,
        "backend B"
    );
    let (status, _, _) = get(&ca, l.https, "nope.apps.test", true, "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // No certificate for the name: no handshake.
    assert!(tls(&ca, l.https, "plain.test", &[]).await.is_err());

    // The app learns the request came over HTTPS, and for which host.
    let headers = get(&ca, l.https, "shop.test", true, "/headers").await.1;
    assert!(headers.contains("x-forwarded-proto: https"), "{headers}");
    assert!(headers.contains("x-forwarded-host: shop.test"), "{headers}");
    assert!(headers.contains(";proto=https;host=shop.test"), "{headers}");

    // A removed hostname is unknown again.
    assert_eq!(l.proxy.remove_host("shop.test"), [a.addr]);
    assert_eq!(
        get(&ca, l.https, "shop.test", true, "/").await.0,
        StatusCode::NOT_FOUND
    );
    drop(l.certs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_is_offered_by_alpn_and_upgrades_work_over_both_versions() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    ca.issue(dir.path(), "shop.test.pem", &["shop.test"]);
    let a = App::start("A").await;
    let l = listening(dir.path()).await;
    l.proxy.set_host_backends("shop.test", &[a.addr], true);

    let io = tls(&ca, l.https, "shop.test", &[b"h2", b"http/1.1"])
        .await
        .expect("handshake");
    assert_eq!(io.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("h2");
    tokio::spawn(connection);
    for _ in 0..3 {
        let request = Request::get("https://shop.test/")
            .body(Full::<Bytes>::default())
            .expect("request");
        let response = sender.send_request(request).await.expect("answer");
        assert_eq!(response.version(), Version::HTTP_2);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(&body[..], b"backend A");
    }

    // RFC 8441 on the same connection: an extended CONNECT naming the protocol reaches the
    // app as its HTTP/1.1 upgrade, and the stream becomes the tunnel.
    let mut request = Request::connect("https://shop.test/")
        .body(Full::<Bytes>::default())
        .expect("request");
    (request.extensions_mut()).insert(hyper::ext::Protocol::from_static("echo"));
    let response = sender.send_request(request).await.expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = TokioIo::new(hyper::upgrade::on(response).await.expect("tunnel"));
    let mut greeting = [0; 2];
    stream.read_exact(&mut greeting).await.expect("greeting");
    assert_eq!(&greeting, b"A\n");
    stream.write_all(b"ping").await.expect("write");
    let mut echo = [0; 4];
    stream.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"ping");

    // HTTP/1.1 over TLS: the app switches protocols and echoes.
    let io = tls(&ca, l.https, "shop.test", &[b"http/1.1"])
        .await
        .expect("handshake");
    let mut io = BufReader::new(io);
    io.write_all(
        b"GET / HTTP/1.1\r\nHost: shop.test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .expect("write");
    let head = super::apps::read_head(&mut io).await.expect("head");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut greeting = String::new();
    io.read_line(&mut greeting).await.expect("greeting");
    assert_eq!(greeting, "A\n");
    io.write_all(b"ping").await.expect("write");
    let mut echo = [0; 4];
    io.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_serves_new_handshakes_and_a_broken_one_keeps_the_old() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = Ca::new();
    let first = ca.issue(dir.path(), "shop.test.pem", &["shop.test"]);
    let a = App::start("A").await;
    let l = listening(dir.path()).await;
    l.proxy.set_host_backends("shop.test", &[a.addr], true);
    let presented = |io: &tokio_rustls::client::TlsStream<TcpStream>| {
        io.get_ref().1.peer_certificates().expect("certificates")[0].clone()
    };
    let open = tls(&ca, l.https, "shop.test", &[])
        .await
        .expect("handshake");
    assert_eq!(presented(&open), first);

    // A half-written file is not a certificate: the loaded one keeps serving.
    std::fs::write(
        dir.path().join("shop.test.pem"),
        "-----BEGIN PRIVATE KEY-----\nMII",
    )
    .expect("write");
    l.certs.reload();
    let io = tls(&ca, l.https, "shop.test", &[])
        .await
        .expect("handshake");
    assert_eq!(presented(&io), first);

    let second = ca.issue(dir.path(), "shop.test.pem", &["shop.test"]);
    l.certs.reload();
    let io = tls(&ca, l.https, "shop.test", &[])
        .await
        .expect("handshake");
    assert_eq!(presented(&io), second);
    // The connection made before the change still works.
    let mut open = open;
    open.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    open.read_to_string(&mut answer).await.ok();
    assert!(answer.ends_with("backend A"), "{answer}");

    // A removed file takes the hostname's HTTPS away.
    std::fs::remove_file(dir.path().join("shop.test.pem")).expect("remove");
    l.certs.reload();
    assert!(tls(&ca, l.https, "shop.test", &[]).await.is_err());
}
