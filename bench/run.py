#!/usr/bin/env python3
"""Benchmarks `deploy` against the hand-rolled baseline hook, on the BPT example.

    python3 bench/run.py [--runs 5] [--write]

One run measures, for each of three setups, on a fresh root each time:
  baseline  bench/baseline/post-receive: docker-compose build && up -d, tag the image
  deploy    `deploy hook` run in-process by the post-receive hook (no daemon)
  serve     the same hook handing the push to `deploy serve`, which owns the app's port

  cold      first push to a new root until the page answers
  warm      a one-line change pushed until the page shows the new version
  noop      a new commit with the same tree, until the push returns (and whether it built)
  rollback  back to the first revision until the page shows it
  load      failed requests during one more redeploy under steady loopback load

Also once per run, the limit a warm redeploy is held against: the same BuildKit build of
the same one-line change, a container of it started and its first answer, done by hand
through the Engine API (no `deploy`), beside an already running database.

Then, once per run, `deploy` alone: its peak RSS while sending a 500 MiB build context, and
the build-context bytes it sent against the repo's size. After the runs, with `deploy
serve`: failed requests during 20 consecutive deploys under load, and the proxy's latency
and throughput against the app container reached directly (needs `wrk`).

Each figure is the median (min-max) of the runs; each ratio is taken inside one run and then
the median is shown. With --write the table replaces the part of BENCHMARKS.md between its
markers, and the raw figures go to bench/results.json. Everything is made under one unique name and removed on exit, also on Ctrl-C.
Only 127.0.0.1 and the project's own containers get traffic; every loop is bounded.
"""

import argparse
import io
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.parse
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "target" / "release" / "deploy"
BASELINE = REPO / "bench" / "baseline"
EXAMPLE = REPO / "deploy-examples" / "bpt"
BENCHMARKS = REPO / "BENCHMARKS.md"
RESULTS = REPO / "bench" / "results.json"  # the raw figures behind BENCHMARKS.md's table
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

PAGE_TIMEOUT = 180  # seconds a deploy may take before the run counts as broken
SETUPS = ("baseline", "deploy", "serve")
# What wrk asks the app for: a database round trip, and a 404 answered without the database.
WRK_PATHS = {"/health": "`GET /health` (one database query)", "/none": "`GET /none` (a 404, no database)"}
GIT_ID = ["-c", "user.name=Bench", "-c", "user.email=bench@example.com"]


def log(message):
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def sh(*args, check=True, **kw):
    """Runs a command; its output goes to the bench log unless it fails."""
    out = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, **kw
    )
    with open(WORK / "commands.log", "a") as f:
        f.write(f"$ {' '.join(map(str, args))}\n{out.stdout}{out.stderr}\n")
    if check and out.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(map(str, args))}` exited {out.returncode}:\n{out.stdout}{out.stderr}"
        )
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path="/", host="127.0.0.1", timeout=2.0):
    """(status, body) or None when the connection fails."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_for_version(port, version, since, timeout=PAGE_TIMEOUT):
    """Seconds from `since` until the page answers 200 with `version`."""
    want = f"version: {version}<"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = get(port)
        if r and r[0] == 200 and want in r[1]:
            return time.monotonic() - since
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not serve version {version} within {timeout}s")


class Load:
    """A steady stream of GET / on loopback, one new connection each, about `rate` a second,
    bounded in count and time. Counts answers that are not 200 within the timeout."""

    def __init__(self, port, rate=50, max_seconds=900):
        self.port, self.interval = port, 1.0 / rate
        self.max_requests = int(rate * max_seconds)
        self.total = self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set() and self.total < self.max_requests:
            started = time.monotonic()
            r = get(self.port, timeout=5.0)
            self.total += 1
            if not r or r[0] != 200:
                self.failed += 1
            self.stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def _terminate(signum, _frame):
    """SIGTERM unwinds like Ctrl-C, so every `finally` and `with` cleans up."""
    raise KeyboardInterrupt(f"signal {signum}")


# ---------------------------------------------------------------------------------------
# A deploy target: a root the app is pushed to, under one of the three setups


class Target:
    def __init__(self, setup, name):
        self.setup, self.name = setup, name
        self.root = WORK / name / "root"
        self.clone = WORK / name / "app"
        self.image = f"{name}-server"
        self.port = free_port()
        self.daemon = None
        self.revs = []

    def __enter__(self):
        try:
            self.create()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc):
        self.teardown()

    # -- setting up -------------------------------------------------------------------

    def create(self):
        root = self.root
        if self.setup == "baseline":
            sh("git", "init", "-q", "--bare", "-b", "main", root / "code.git")
            shutil.copy(BASELINE / "post-receive", root / "code.git" / "hooks" / "post-receive")
            for d in ("code/.secrets", "db-data", "build-logs"):
                (root / d).mkdir(parents=True, exist_ok=True)
            (root / "host.env").write_text(
                f"IMAGE={self.image}\nCOMPOSE_PROJECT_NAME={self.name}\n"
                f"COMPOSE_DOCKER_CLI_BUILD=0\nBPT_PORT={self.port}\n"
            )
        else:
            sh(DEPLOY, "init", root)
            (root / "host.env").write_text(f"BPT_PORT={self.port}\n")
            with open(root / "deploy.yml", "a") as f:
                f.write(f"project: {self.name}\nenv_file: host.env\n")
        secret = root / "code" / ".secrets" / "db_password"
        secret.write_text(os.urandom(12).hex() + "\n")
        secret.chmod(0o600)
        if self.setup == "serve":
            self.start_daemon()

        shutil.copytree(EXAMPLE, self.clone)
        compose = self.clone / "docker-compose.yml"
        compose.write_text(compose.read_text().replace("image: bpt-server", f"image: {self.image}"))
        sh("git", "init", "-q", "-b", "main", self.clone)
        sh("git", "-C", self.clone, "remote", "add", "prod", root / "code.git")

    def start_daemon(self):
        out = open(WORK / self.name / "serve.log", "w")
        self.daemon = subprocess.Popen(
            [DEPLOY, "serve", "--root", self.root], stdout=out, stderr=subprocess.STDOUT
        )
        sock = self.root / "deploy.sock"
        for _ in range(200):
            if sock.exists():
                return
            time.sleep(0.05)
        raise RuntimeError(f"deploy serve did not open {sock}")

    def teardown(self):
        if self.daemon:
            self.daemon.terminate()
            self.daemon.wait(timeout=60)
            self.daemon = None
        if self.setup == "baseline":
            if (self.root / "code" / "docker-compose.yml").exists():
                env = dict(os.environ, COMPOSE_PROJECT_NAME=self.name, BPT_PORT=str(self.port),
                           IMAGE=self.image)
                sh("docker-compose", "down", "-v", "--remove-orphans",
                   cwd=self.root / "code", env=env, check=False)
        elif (self.root / "code.git").exists():
            sh(DEPLOY, "down", "--root", self.root, "--delete-volumes", check=False)
        # By tag, not id: an id whose layers another image builds on cannot be removed, while
        # a tag always can, and the layers go with the last image that uses them.
        refs = "{{.Repository}}:{{.Tag}}"
        tags = sh("docker", "images", "--format", refs, self.image, check=False).stdout.split()
        tags += sh("docker", "images", "--format", refs, "--filter",
                   f"label=deploy.project={self.name}", check=False).stdout.split()
        tags = sorted({t for t in tags if not t.endswith(":<none>")})
        if tags:
            sh("docker", "rmi", *tags, check=False)
        # db-data belongs to the database's user: removed as root, like the rest.
        shutil.rmtree(WORK / self.name, ignore_errors=True)

    # -- what users do -----------------------------------------------------------------

    def commit(self, version=None, message="change"):
        if version is not None:
            (self.clone / "VERSION").write_text(version + "\n")
        sh("git", "-C", self.clone, "add", "-A")
        sh("git", "-C", self.clone, *GIT_ID, "commit", "-q", "--allow-empty", "-m", message)
        rev = sh("git", "-C", self.clone, "rev-parse", "HEAD").stdout.strip()
        self.revs.append(rev)
        return rev

    def push(self, refspec="main:main"):
        sh("git", "-C", self.clone, "push", "-q", "prod", refspec)

    def rollback(self, rev):
        if self.setup == "baseline":
            sh(BASELINE / "rollback", self.root, rev)
        else:
            sh(DEPLOY, "--root", self.root, "--revision", rev)

    def version(self, n):
        """A version string no earlier build has seen, so that Docker's layer cache cannot
        hand back the image of an identical change from another setup or run."""
        return f"{self.name}-v{n}"

    def timed_push(self, n):
        """Seconds from `git push` until the page shows version `n`, and the push's own time."""
        version = self.version(n)
        self.commit(version)
        t0 = time.monotonic()
        self.push()
        pushed = time.monotonic() - t0
        return wait_for_version(self.port, version, t0), pushed

    def build_log(self, rev):
        logs = sorted((self.root / "build-logs").glob(f"* {rev} *"), key=lambda p: p.stat().st_mtime)
        if not logs:
            raise RuntimeError(f"no build log for {rev} in {self.root / 'build-logs'}")
        return logs[-1].read_text()


def docker_seconds(build_log):
    """Seconds the deploy's build log spent in Docker: builds, and starting containers until
    they were healthy (the `build …`, `start …` and `replace …` steps)."""
    total = 0.0
    for m in re.finditer(r" DONE\s+(build|start|replace|pull|remove old containers)\b.* in ([0-9.]+)s$", build_log, re.M):
        total += float(m.group(2))
    return total


def built(build_log):
    return bool(re.search(r" STEP\s+build ", build_log))


def context_bytes(build_log):
    m = re.search(r"sent a build context of .*?\((\d+) bytes\)", build_log)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------
# The limit: what the engine itself needs for a warm redeploy, asked by hand


class Engine(http.client.HTTPConnection):
    """One request to the Docker Engine API over its unix socket."""

    def __init__(self, timeout=PAGE_TIMEOUT):
        super().__init__("docker", timeout=timeout)

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect("/var/run/docker.sock")


def api(method, path, body=None, headers=None):
    """(status, body) of one Engine API call; `body` a dict is sent as JSON."""
    headers = dict(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn = Engine()
    try:
        conn.request(method, "/v1.41" + path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def api_ok(method, path, body=None, headers=None):
    status, data = api(method, path, body, headers)
    if status >= 300:
        raise RuntimeError(f"{method} {path}: {status} {data[:500]!r}")
    return json.loads(data) if data.strip() else None


def buildkit_build(context, tag, project):
    """The build `deploy` sends: BuildKit, a tar context, its cache namespace and inline
    cache. Raises on a build error."""
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w", format=tarfile.GNU_FORMAT) as t:
        for path in sorted(context.rglob("*")):
            rel = path.relative_to(context)
            if ".secrets" not in rel.parts:
                t.add(path, arcname=str(rel), recursive=False)
    args = json.dumps({"BUILDKIT_CACHE_MOUNT_NS": project, "BUILDKIT_INLINE_CACHE": "1"})
    query = urllib.parse.urlencode({"version": "2", "t": tag, "buildargs": args,
                                    "labels": json.dumps({"deploy.bench": project})})
    status, data = api("POST", f"/build?{query}", tar.getvalue(),
                       {"Content-Type": "application/x-tar"})
    for line in data.splitlines():
        message = json.loads(line)
        if status >= 300 or "error" in message:
            raise RuntimeError(f"the hand-made build failed: {message}")


def measure_limit(run):
    """Seconds for a warm redeploy done by hand: the BuildKit build of a one-line change, a
    container of it created and started beside the running one, and its first answer with
    the new version, asked of the container's own address (as `deploy serve`'s proxy does)."""
    name = f"{PREFIX}-limit-{run}"
    work = WORK / name
    app = work / "app"
    shutil.copytree(EXAMPLE, app)
    secret = work / "db_password"
    secret.write_text(os.urandom(12).hex() + "\n")
    labels = {"deploy.bench": name}
    made = {"containers": [], "images": []}
    try:
        api_ok("POST", "/networks/create", {"Name": name, "Labels": labels})
        mounts = [f"{secret}:/run/secrets/db_password:ro"]
        db = api_ok("POST", f"/containers/create?name={name}-db", {
            "Image": "postgres:15", "Labels": labels,
            "Env": ["POSTGRES_DB=bpt", "POSTGRES_PASSWORD_FILE=/run/secrets/db_password"],
            "HostConfig": {"Binds": mounts, "NetworkMode": name},
            "NetworkingConfig": {"EndpointsConfig": {name: {"Aliases": ["db"]}}},
        })["Id"]
        made["containers"].append(db)
        api_ok("POST", f"/containers/{db}/start")

        def start(version):
            (app / "VERSION").write_text(version + "\n")
            tag = f"{name}-server:{version}"
            buildkit_build(app, tag, name)
            made["images"].append(tag)
            c = api_ok("POST", f"/containers/create?name={name}-{version}", {
                "Image": tag, "Labels": labels,
                "Env": ["DATABASE_HOST=db", "DATABASE_NAME=bpt", "DATABASE_USER=postgres",
                        "DATABASE_PASSWORD_FILE=/run/secrets/db_password"],
                "HostConfig": {"Binds": mounts, "NetworkMode": name},
            })["Id"]
            made["containers"].append(c)
            api_ok("POST", f"/containers/{c}/start")
            ip = api_ok("GET", f"/containers/{c}/json")["NetworkSettings"]["Networks"][name]["IPAddress"]
            return ip

        # Untimed: the database's first start and a cold build, as a running app has behind it.
        ip = start(f"{name}-v0")
        wait_for_answer(ip, f"{name}-v0", time.monotonic())
        t0 = time.monotonic()
        ip = start(f"{name}-v1")
        seconds = wait_for_answer(ip, f"{name}-v1", t0)
        log(f"run {run} limit: {seconds:.2f}s")
        return seconds
    finally:
        for c in made["containers"]:
            api("DELETE", f"/containers/{c}?force=1&v=1")
        api("DELETE", f"/networks/{name}")
        for tag in made["images"]:
            api("DELETE", f"/images/{urllib.parse.quote(tag, safe='')}")


def wait_for_answer(ip, version, since, timeout=PAGE_TIMEOUT):
    """Seconds from `since` until the app at `ip`:80 answers 200 with `version`."""
    want = f"version: {version}<"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = get(80, host=ip, timeout=1.0)
        if r and r[0] == 200 and want in r[1]:
            return time.monotonic() - since
        time.sleep(0.02)
    raise RuntimeError(f"{ip} did not serve version {version} within {timeout}s")


# ---------------------------------------------------------------------------------------
# The measurements


def measure_setup(setup, run):
    r = {}
    with Target(setup, f"{PREFIX}-{setup}-{run}") as t:
        log(f"run {run} {setup}: cold")
        r["cold"], _ = t.timed_push(0)
        first = t.revs[-1]

        log(f"run {run} {setup}: warm")
        r["warm"], pushed = t.timed_push(1)
        if setup != "baseline":
            build_log = t.build_log(t.revs[-1])
            r["own"] = 100.0 * max(0.0, pushed - docker_seconds(build_log)) / pushed

        log(f"run {run} {setup}: no-op")
        rev = t.commit(message="no-op")
        t0 = time.monotonic()
        t.push()
        r["noop"] = time.monotonic() - t0
        if get(t.port) is None:
            raise RuntimeError("the page stopped answering after a no-op push")
        if setup != "baseline":
            r["noop_built"] = int(built(t.build_log(rev)))

        log(f"run {run} {setup}: rollback")
        t0 = time.monotonic()
        t.rollback(first)
        r["rollback"] = wait_for_version(t.port, t.version(0), t0)

        log(f"run {run} {setup}: redeploy under load")
        with Load(t.port) as load:
            time.sleep(2)
            t.timed_push(2)
            time.sleep(2)
        r["failed"], r["requests"] = load.failed, load.total
        r["failed_pct"] = 100.0 * load.failed / max(1, load.total)
    log(f"run {run} {setup}: {json.dumps({k: round(v, 3) for k, v in r.items()})}")
    return r


def measure_context(run, size_mb):
    """`deploy` alone: peak RSS while sending a context of `size_mb` MB, and the context bytes
    sent against the repo's size, with an ignored folder that is never sent."""
    with Target("deploy", f"{PREFIX}-context-{run}") as t:
        # An incompressible file that is sent, and one that .dockerignore keeps out.
        with open(t.clone / "big.bin", "wb") as f:  # size_mb MiB
            for _ in range(size_mb):
                f.write(os.urandom(1 << 20))
        (t.clone / "ignored").mkdir()
        with open(t.clone / "ignored" / "data.bin", "wb") as f:
            f.write(os.urandom(64 << 20))
        with open(t.clone / ".dockerignore", "a") as f:
            f.write("ignored/\n")
        sh("git", "-C", t.clone, "config", "core.compression", "0")
        rev = t.commit(t.version("big"))
        log(f"run {run} context: pushing {size_mb} MB to a branch that is not deployed")
        t.push("HEAD:refs/heads/ctx")
        repo_bytes = sum(
            int(line.split()[3])
            for line in sh("git", "-C", t.clone, "ls-tree", "-r", "-l", rev).stdout.splitlines()
        )
        log(f"run {run} context: deploy --revision")
        # A fresh interpreter whose only child is `deploy`: its RUSAGE_CHILDREN peak is deploy's.
        probe = (
            "import resource, subprocess, sys\n"
            "r = subprocess.run(sys.argv[1:], capture_output=True)\n"
            "sys.stderr.buffer.write(r.stdout + r.stderr)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "sys.exit(r.returncode)\n"
        )
        out = sh(sys.executable, "-c", probe, DEPLOY, "--root", t.root, "--revision", rev)
        rss_mb = int(out.stdout.split()[-1]) / 1024
        wait_for_version(t.port, t.version("big"), time.monotonic())
        sent = context_bytes(t.build_log(rev))
        return {"rss_mb": rss_mb, "context_bytes": sent, "repo_bytes": repo_bytes}


def measure_serve(deploys, wrk_seconds, wrk_rounds):
    """With `deploy serve`: failed requests over consecutive deploys under load; then the
    proxy against the app container's own address, with wrk, alternating."""
    r = {}
    with Target("serve", f"{PREFIX}-serve-many") as t:
        t.timed_push(0)
        log(f"serve: {deploys} consecutive deploys under load")
        with Load(t.port) as load:
            for i in range(1, deploys + 1):
                t.timed_push(i)
        r["many_failed"], r["many_requests"], r["many_deploys"] = load.failed, load.total, deploys

        if shutil.which("wrk") is None:
            raise RuntimeError("wrk is not installed (apt-get install wrk)")
        ids = sh("docker", "ps", "-q", "--filter", f"label=deploy.project={t.name}",
                 "--filter", "label=deploy.service=server").stdout.split()
        if len(ids) != 1:
            raise RuntimeError(f"expected one server container, found {ids}")
        nets = json.loads(sh("docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}",
                             ids[0]).stdout)
        ip = next(n["IPAddress"] for name, n in nets.items() if name.endswith("_default"))
        runs = {path: {"direct": [], "proxy": []} for path in WRK_PATHS}
        for i in range(wrk_rounds):
            for path in WRK_PATHS:
                for kind, url in (("direct", f"http://{ip}:80{path}"),
                                  ("proxy", f"http://127.0.0.1:{t.port}{path}")):
                    out = sh("wrk", "-t1", "-c4", f"-d{wrk_seconds}s", "--latency", url).stdout
                    runs[path][kind].append(parse_wrk(out))
                    log(f"serve: wrk {kind} {path} round {i + 1}: {runs[path][kind][-1]}")
        r["wrk"] = runs
    return r


def parse_wrk(out):
    def ms(value):
        n, unit = re.match(r"([0-9.]+)(us|ms|s)", value).groups()
        return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {
        "rps": float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1)),
        "p50_ms": ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        "p99_ms": ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
        "socket_errors": sum(
            int(n) for n in re.findall(r"\d+", (re.search(r"Socket errors:.*", out) or [""])[0])
        ),
    }


# ---------------------------------------------------------------------------------------
# The table


def spread(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1 or min(values) == max(values):
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def table(results):
    runs = results["runs"]

    def col(setup, key):
        return [run[setup].get(key) for run in runs]

    def ratio(setup, key):
        return [run[setup][key] / run["baseline"][key] for run in runs if run["baseline"][key]]

    rows = [
        ("Cold deploy: first push until the page answers (s)", "cold", "{:.1f}", ""),
        ("Warm redeploy: one-line change until it answers (s)", "warm", "{:.1f}", "≤ 0.8× baseline"),
        ("No-op push: same tree, push returns (s)", "noop", "{:.2f}", "< 1 s, no build"),
        ("Rollback until the old version answers (s)", "rollback", "{:.1f}", "< 3 s"),
        ("Failed requests during one redeploy under load (%)", "failed_pct", "{:.1f}", "0 with serve"),
    ]
    lines = [
        "| Measure | baseline | deploy | deploy ÷ baseline | deploy serve | serve ÷ baseline | goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, key, fmt, goal in rows:
        cells = [spread(col("baseline", key), fmt)]
        for setup in ("deploy", "serve"):
            cells.append(spread(col(setup, key), fmt))
            cells.append(spread(ratio(setup, key), "{:.2f}×") if key != "failed_pct" else "")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {goal} |")
    lines.append(
        "| Images built by the no-op push | 1 (always builds) | "
        f"{spread(col('deploy', 'noop_built'), '{:.0f}')} | | "
        f"{spread(col('serve', 'noop_built'), '{:.0f}')} | | 0 |"
    )
    lines.append(
        "| Time in `deploy` itself, % of the warm redeploy | | "
        f"{spread(col('deploy', 'own'), '{:.1f}')} | | {spread(col('serve', 'own'), '{:.1f}')} | | < 5 % |"
    )
    ctx = results.get("context") or []
    if ctx:
        lines.append(
            f"| Peak RSS of `deploy` sending a {results['context_mb']} MiB context (MiB) | | "
            f"{spread([c['rss_mb'] for c in ctx], '{:.1f}')} | | | | < 50 MB |"
        )
        c = ctx[0]
        lines.append(
            f"| Build context sent ÷ repo size, with 64 MiB `.dockerignore`d | | "
            f"{c['context_bytes'] / 2**20:.1f} MiB ÷ {c['repo_bytes'] / 2**20:.1f} MiB | | | | ignored files not sent |"
        )
    def failed(setup):
        return (f"{sum(run[setup]['failed'] for run in runs)} of "
                f"{sum(run[setup]['requests'] for run in runs)}")

    lines.append(
        f"| Failed requests, summed over every run's loaded redeploy | {failed('baseline')} | "
        f"{failed('deploy')} | | {failed('serve')} | | 0 with serve |"
    )

    serve = results.get("serve")
    out = "\n".join(lines)
    limited = [run for run in runs if "limit" in run]
    if limited:
        def over(setup):
            return [run[setup]["warm"] / run["limit"]["warm"] for run in limited]

        out += "\n\n" + "\n".join([
            "| Warm redeploy against the engine's own cost | result | goal |",
            "|---|---|---|",
            "| Limit: the same BuildKit build, a container started, its first answer, by hand (s) | "
            f"{spread([run['limit']['warm'] for run in limited], '{:.1f}')} | |",
            f"| `deploy` ÷ limit | {spread(over('deploy'), '{:.2f}×')} | |",
            f"| `deploy serve` ÷ limit | {spread(over('serve'), '{:.2f}×')} | ≤ 1.5× |",
        ])
    if serve:
        rows = [
            "| `deploy serve` | result | goal |",
            "|---|---|---|",
            f"| Failed requests during {serve['many_deploys']} consecutive deploys under load | "
            f"{serve['many_failed']} of {serve['many_requests']} | 0 |",
        ]
        for path, w in serve["wrk"].items():
            def med(kind, key):
                return statistics.median(x[key] for x in w[kind])

            def added(key):
                return [px[key] - dx[key] for dx, px in zip(w["direct"], w["proxy"])]

            loss = [100.0 * (1 - px["rps"] / dx["rps"]) for dx, px in zip(w["direct"], w["proxy"])]
            rows += [
                f"| {WRK_PATHS[path]}: throughput, container direct → proxy (req/s) | "
                f"{med('direct', 'rps'):.0f} → {med('proxy', 'rps'):.0f}; lost {spread(loss, '{:.1f}')} % "
                f"| ≤ 10 % lost |",
                f"| {WRK_PATHS[path]}: p50 latency, direct → proxy (ms) | "
                f"{med('direct', 'p50_ms'):.2f} → {med('proxy', 'p50_ms'):.2f}; "
                f"added {spread(added('p50_ms'), '{:.2f}')} | ≤ 1 ms added |",
                f"| {WRK_PATHS[path]}: p99 latency, direct → proxy (ms) | "
                f"{med('direct', 'p99_ms'):.2f} → {med('proxy', 'p99_ms'):.2f}; "
                f"added {spread(added('p99_ms'), '{:.2f}')} | |",
            ]
        out += "\n\n" + "\n".join(rows)
    return out


def machine():
    docker = sh("docker", "version", "-f", "{{.Server.Version}}", check=False).stdout.strip()
    driver = sh("docker", "info", "-f", "{{.Driver}}", check=False).stdout.strip()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {mem:.0f} GiB, Linux {os.uname().release}, Docker {docker} ({driver})"


def report(results):
    head = (
        f"{results['date']}, commit `{results['commit']}`, {results['machine']}; "
        f"{len(results['runs'])} runs; median (min–max).\n"
        f"Reproduce: `{results['command']}`\n\n"
    )
    return head + table(results)


def write_benchmarks(text):
    doc = BENCHMARKS.read_text()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    BENCHMARKS.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])


# ---------------------------------------------------------------------------------------


def main():
    global WORK, PREFIX
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--context-mb", type=int, default=500)
    p.add_argument("--serve-deploys", type=int, default=20)
    p.add_argument("--wrk-seconds", type=int, default=10)
    p.add_argument("--wrk-rounds", type=int, default=5)
    p.add_argument("--skip", action="append", default=[], choices=["context", "serve", "limit"],
                   help="leave out the context, the serve-only or the hand-made limit measurements")
    p.add_argument("--write", action="store_true", help="put the table in BENCHMARKS.md")
    p.add_argument("--results", type=Path, help="only print (or --write) a saved results file")
    args = p.parse_args()

    if args.results:
        text = report(json.loads(args.results.read_text()))
        print(text)
        if args.write:
            write_benchmarks(text)
        return

    signal.signal(signal.SIGTERM, _terminate)
    PREFIX = f"bench{os.getpid()}"
    WORK = Path(tempfile.mkdtemp(prefix="deploy-bench-"))
    command = "python3 bench/run.py " + " ".join(sys.argv[1:])
    try:
        log(f"work dir {WORK}; building deploy and the offline images")
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet"], cwd=REPO, check=True)
        subprocess.run(["bash", "scripts/offline-images"], cwd=REPO, check=True)
        results = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "commit": sh("git", "-C", REPO, "rev-parse", "--short", "HEAD").stdout.strip(),
            "machine": machine(),
            "command": command.strip(),
            "context_mb": args.context_mb,
            "runs": [],
        }
        for run in range(1, args.runs + 1):
            results["runs"].append({s: measure_setup(s, run) for s in SETUPS})
            if "limit" not in args.skip:
                results["runs"][-1]["limit"] = {"warm": measure_limit(run)}
            if "context" not in args.skip:
                results.setdefault("context", []).append(measure_context(run, args.context_mb))
        if "serve" not in args.skip:
            results["serve"] = measure_serve(args.serve_deploys, args.wrk_seconds, args.wrk_rounds)
        saved = REPO / "target" / "bench-results.json"
        saved.write_text(json.dumps(results, indent=1))
        text = report(results)
        print(text)
        log(f"raw results in {saved}")
        if args.write:
            write_benchmarks(text)
            RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
