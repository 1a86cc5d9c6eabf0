//! ACME against Pebble (Let's Encrypt's test server, Debian's `pebble` package) on loopback:
//! a real push routes a hostname, `deploy serve` obtains its certificate through HTTP-01
//! answered by its own proxy, and serves it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::daemon::{Daemon, serve_log};
use common::{Stack, curl};

/// Pebble and its DNS stand-in, stopped when dropped.
struct Pebble {
    children: Vec<Child>,
    directory: String,
    management: u16,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts Pebble on loopback, its own HTTPS certificate from a CA written to `ca_pem`; it
/// validates HTTP-01 on `http_port` and resolves every name to 127.0.0.1.
fn start_pebble(dir: &Path, ca_pem: &Path, http_port: u16) -> Pebble {
    // One file holds the key and the chain; Pebble picks what it needs from each.
    let ca = common::ca::Ca::new(ca_pem);
    ca.issue(dir, "pebble.pem", "localhost");
    let (listen, management, dns, tls) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{listen}"),
        "managementListenAddress": format!("127.0.0.1:{management}"),
        "certificate": dir.join("pebble.pem"),
        "privateKey": dir.join("pebble.pem"),
        "httpPort": http_port,
        "tlsPort": tls,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
    let dns_server = Command::new("pebble-challtestsrv")
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
        .args(["-dns01", &format!("127.0.0.1:{dns}")])
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
        .args(["-management", &format!("127.0.0.1:{}", common::free_port())])
        .stdout(log("challtestsrv.log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble-challtestsrv (apt-get install pebble)");
    let pebble = Command::new("pebble")
        .arg("-config")
        .arg(dir.join("pebble.json"))
        .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(log("pebble.log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("pebble (apt-get install pebble)");
    let pebble = Pebble {
        children: vec![dns_server, pebble],
        directory: format!("https://localhost:{listen}/dir"),
        management,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
        assert!(Instant::now() < deadline, "pebble never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    pebble
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn acme_obtains_a_certificate_from_pebble_through_http_01_and_serves_it() {
    let stack = Stack::web("acme");
    let base = stack.base.path();
    let ca_pem = base.join("pebble-ca.pem");
    let (http, https) = (common::free_port(), common::free_port());
    let pebble = start_pebble(base, &ca_pem, http);
    stack.add_settings(&format!(
        "hostnames: [shop.test]\nacme:\n  directory: {}\n  email: ops@shop.test\n  ca_file: {}\n",
        pebble.directory,
        ca_pem.display()
    ));
    let certs = base.join("certs");
    std::fs::create_dir(&certs).unwrap();
    let _daemon = Daemon::start_hosts(&stack, (http, https), &certs, &[]);
    stack.write("index.html", "version: v1\n");
    stack.commit("v1");
    let push = stack.push("alice");
    assert!(push.pushed, "{}", push.output);

    // Pebble signs with a root of its own making, served on its management port.
    let ca_arg = ca_pem.to_str().unwrap();
    let roots = curl(&[
        "--cacert",
        ca_arg,
        &format!("https://localhost:{}/roots/0", pebble.management),
    ])
    .unwrap();
    let pebble_root = base.join("pebble-root.pem");
    std::fs::write(&pebble_root, roots).unwrap();
    let resolve = format!("shop.test:{https}:127.0.0.1");
    let url = format!("https://shop.test:{https}/");
    let deadline = Instant::now() + Duration::from_secs(90);
    let page = loop {
        match curl(&[
            "--cacert",
            pebble_root.to_str().unwrap(),
            "--resolve",
            &resolve,
            &url,
        ]) {
            Ok(page) => break page,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no certificate from Pebble: {e}\n{}",
                serve_log(&stack)
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(page, "version: v1\n");

    // Kept under ROOT, readable by the daemon's user only, and never in a log.
    let acme = stack.root.join("acme");
    assert_eq!(mode(&acme), 0o700);
    assert_eq!(mode(&acme.join("account.json")), 0o600);
    assert_eq!(mode(&acme.join("certs/shop.test.pem")), 0o600);
    assert!(!serve_log(&stack).contains("PRIVATE KEY"));
    // HTTP now goes to HTTPS, and `deploy status` counts the certificate's days.
    let redirect = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--resolve",
        &format!("shop.test:{http}:127.0.0.1"),
        &format!("http://shop.test:{http}/"),
    ]);
    assert_eq!(redirect.unwrap(), "308");
    let status = common::text(&stack.deploy(&["status"]));
    assert!(status.contains("shop.test (https"), "{status}");
}
