#!/usr/bin/env python3
"""HTTPS through `deploy serve`'s proxy against plain HTTP to the container (BENCHMARKS.md).

One root with a one-file static app (Python's http.server, HTTP/1.1 keep-alive, `GET /` a
13-byte page), deployed
by a real push under `deploy serve --http … --https … --certs …` with `hostnames:
[localhost]` and a certificate for `localhost` made by openssl. Then, in rounds, alternating:
`wrk -t1 -c4 --latency` (`--connections`) against the container's own address (plain HTTP), the proxy's HTTP
listener, and its HTTPS listener (keep-alive connections, so TLS costs its record layer);
and the time of full TLS handshakes to the HTTPS listener on loopback (a new connection
each, session resumption off).

    cargo build --release && python3 bench/https.py [--rounds 5] [--seconds 10]

Everything is made under one unique name in a temporary directory and removed at the end.
Traffic goes only to 127.0.0.1 and to the benchmark's own container.
"""

import argparse
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "target" / "release" / "deploy"
GIT_ID = ["-c", "user.name=Bench", "-c", "user.email=bench@example.com"]


def sh(*args, check=True, **kw):
    return subprocess.run([str(a) for a in args], check=check, capture_output=True, text=True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wrk(url, seconds, connections):
    out = sh("wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url).stdout

    def ms(value):
        n, unit = re.match(r"([0-9.]+)(us|ms|s)", value).groups()
        return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"wrk {url}: {non2xx.group(0)}")
    errors = re.search(r"Socket errors:.*", out)
    return {
        "errors": sum(int(n) for n in re.findall(r"\d+", errors.group(0))) if errors else 0,
        "rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),
        "p50": ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        "p99": ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
    }


def handshakes(port, ca, count=200):
    """Milliseconds per full TLS handshake (connect included), each on a new connection."""
    context = ssl.create_default_context(cafile=str(ca))
    times = []
    for _ in range(count):
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost", session=None):
                times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), sorted(times)[int(len(times) * 0.99) - 1]


def start_nginx(work, ip, ports):
    """nginx as the same reverse proxy: one worker (the proxy's share of a small host),
    keep-alive to the app, TLS with the same certificate."""
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx.error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    upstream app {{ server {ip}:8000; keepalive 32; }}
    server {{
        listen 127.0.0.1:{ports[0]};
        listen 127.0.0.1:{ports[1]} ssl;
        ssl_certificate {work}/cert.pem;
        ssl_certificate_key {work}/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
        }}
    }}
}}
""")
    process = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", ports[1]), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nginx did not start: {(work / 'nginx.error.log').read_text()}")


def spread(values, fmt):
    med = statistics.median(values)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--connections", type=int, default=4, help="wrk's connections (-c)")
    p.add_argument("--nginx", action="store_true",
                   help="also measure nginx (Debian's package) as the same proxy, for comparison")
    args = p.parse_args()
    if args.nginx and shutil.which("nginx") is None:
        raise SystemExit("nginx is not installed")
    for tool in ("wrk", "openssl", "git", "docker"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")
    if not DEPLOY.exists():
        raise SystemExit("build it first: cargo build --release")
    name = f"benchhttps{os.getpid()}"
    work = Path(tempfile.mkdtemp(prefix="deploy-bench-https-"))
    root, app, certs = work / name, work / "app", work / "certs"
    daemon = nginx = None
    try:
        certs.mkdir()
        sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
           "-keyout", work / "key.pem", "-out", work / "cert.pem")
        (certs / "localhost.pem").write_text((work / "key.pem").read_text() + (work / "cert.pem").read_text())
        sh(DEPLOY, "init", root)
        with open(root / "deploy.yml", "a") as f:
            # Without the redirect, plain HTTP to the hostname is served, for the HTTP row.
            f.write(f"project: {name}\nhostnames: [localhost]\nhttps_redirect: false\n")
        http, https = free_port(), free_port()
        daemon = subprocess.Popen(
            [DEPLOY, "serve", "--root", root, "--http", f"127.0.0.1:{http}",
             "--https", f"127.0.0.1:{https}", "--certs", certs],
            stdout=subprocess.DEVNULL, stderr=open(work / "serve.stderr", "w"))
        for _ in range(200):
            if (root / "deploy.sock").exists():
                break
            time.sleep(0.05)
        app.mkdir()
        (app / "index.html").write_text("version: v1\n")
        # http.server with HTTP/1.1 keep-alive and a thread per connection: the proxy keeps
        # its connections to the app open, as it does with real app servers. Without Nagle,
        # or its split writes of head and body wait 40 ms for a delayed ACK.
        serve = ("import http.server as s; "
                 "s.SimpleHTTPRequestHandler.protocol_version = 'HTTP/1.1'; "
                 "s.SimpleHTTPRequestHandler.disable_nagle_algorithm = True; "
                 "s.ThreadingHTTPServer(('', 8000), s.SimpleHTTPRequestHandler).serve_forever()")
        (app / "Dockerfile").write_text(
            "FROM python:3.11-slim\nWORKDIR /srv\nCOPY index.html /srv/\nEXPOSE 8000\n"
            f"CMD [\"python\", \"-c\", \"{serve}\"]\n")
        (app / "docker-compose.yml").write_text("services:\n  web:\n    build: .\n")
        sh("git", "init", "-q", "-b", "main", app)
        sh("git", *GIT_ID, "-C", app, "add", "-A")
        sh("git", *GIT_ID, "-C", app, "commit", "-qm", "v1")
        sh("git", "-C", app, "push", "-q", root / "code.git", "main")
        ids = sh("docker", "ps", "-q", "--filter", f"label=deploy.project={name}").stdout.split()
        ip = sh("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                ids[0]).stdout.strip()
        urls = {
            "direct": f"http://{ip}:8000/",
            "http": f"http://localhost:{http}/",
            "https": f"https://localhost:{https}/",
        }
        if args.nginx:
            ports = (free_port(), free_port())
            nginx = start_nginx(work, ip, ports)
            urls["nginx-http"] = f"http://localhost:{ports[0]}/"
            urls["nginx-https"] = f"https://localhost:{ports[1]}/"
        runs = {kind: [] for kind in urls}
        shakes = []
        for _ in range(args.rounds):
            for kind, url in urls.items():
                runs[kind].append(wrk(url, args.seconds, args.connections))
            shakes.append(handshakes(https, work / "cert.pem"))
        direct = runs["direct"]
        c = args.connections
        print(f"| HTTPS through the proxy (`python3 bench/https.py --connections {c}`) | result | goal |")
        print("|---|---|---|")
        kinds = [("http", "HTTP"), ("https", "HTTPS")]
        if args.nginx:
            kinds += [("nginx-http", "HTTP, nginx"), ("nginx-https", "HTTPS, nginx")]
        for kind, label in kinds:
            lost = [100 * (1 - r["rps"] / d["rps"]) for d, r in zip(direct, runs[kind])]
            added = [r["p50"] - d["p50"] for d, r in zip(direct, runs[kind])]
            added99 = [r["p99"] - d["p99"] for d, r in zip(direct, runs[kind])]
            rps = statistics.median(r["rps"] for r in runs[kind])
            goal = ("≤ 15 % lost", "≤ 1 ms added") if kind == "https" else ("", "")
            if kind.startswith("nginx"):
                label = label.replace(", nginx", "") + " (nginx, for comparison)"
            print(f"| `GET /` (13 bytes): throughput, container direct → proxy over {label} (req/s) | "
                  f"{statistics.median(d['rps'] for d in direct):.0f} → {rps:.0f}; lost {spread(lost, '{:.1f}')} % | {goal[0]} |")
            print(f"| `GET /`: p50 latency, direct → proxy over {label} (ms) | "
                  f"{statistics.median(d['p50'] for d in direct):.2f} → {statistics.median(r['p50'] for r in runs[kind]):.2f}; "
                  f"added {spread(added, '{:.2f}')} | {goal[1]} |")
            print(f"| `GET /`: p99 latency, direct → proxy over {label} (ms) | "
                  f"{statistics.median(d['p99'] for d in direct):.2f} → {statistics.median(r['p99'] for r in runs[kind]):.2f}; "
                  f"added {spread(added99, '{:.2f}')} | |")
        errors = {kind: sum(r["errors"] for r in runs[kind]) for kind in urls}
        print(f"| wrk's socket errors and timeouts ({', '.join(urls)}), all rounds | "
              f"{', '.join(str(n) for n in errors.values())} | |")
        print(f"| Full TLS handshake on loopback, connect included: median (ms) | "
              f"{spread([s[0] for s in shakes], '{:.2f}')} | < 2 ms |")
        print(f"| Full TLS handshake: p99 (ms) | {spread([s[1] for s in shakes], '{:.2f}')} | |")
    finally:
        if nginx:
            nginx.terminate()
            nginx.wait(timeout=60)
        if daemon:
            daemon.terminate()
            daemon.wait(timeout=60)
        if (root / "code.git").exists():
            sh(DEPLOY, "down", "--root", root, "--delete-volumes", check=False)
        tags = sh("docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                  f"label=deploy.project={name}", check=False).stdout.split()
        if tags:
            sh("docker", "rmi", *tags, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
