#!/usr/bin/env python3
"""Benchmarks `deploy backup` and `deploy restore-db` against plain `pg_dump`/`pg_restore`.

    python3 bench/backups.py [--size-gb 1] [--runs 3] [--write]

One database of at least --size-gb GiB (random text, so the dump stays large), in a stack
deployed by a real push. Each run times, interleaved:
  pg_dump     `docker exec db pg_dump -Fc` redirected to a file by the shell, by hand
  backup      `deploy backup`: the same dump streamed to ROOT/backups, hashed, checked with
              `pg_restore --list`, recorded in the ledger
  pg_restore  `docker exec -i db pg_restore --clean --if-exists --single-transaction` from
              that file, by hand
  restore-db  `deploy restore-db` of the dump `deploy backup` took: the lock, the checksum,
              the same pg_restore, a ledger row

Each figure is the median (min-max) of the runs; each ratio is taken inside one run. With
--write the table replaces the part of BENCHMARKS.md between its markers. Everything is made
under one unique name and removed on exit, also on Ctrl-C. No traffic leaves the machine.
"""

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "target" / "release" / "deploy"
BENCHMARKS = REPO / "BENCHMARKS.md"
BEGIN, END = "<!-- bench-backups:begin -->", "<!-- bench-backups:end -->"
GIT_ID = ["-c", "user.name=Bench", "-c", "user.email=bench@example.com"]

COMPOSE = """services:
  db:
    image: postgres:15
    environment:
      POSTGRES_PASSWORD_FILE: /run/secrets/db_password
    secrets: [db_password]
    volumes: ["../db-data:/var/lib/postgresql/data"]
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -h 127.0.0.1 -U postgres"]
      interval: 1s
      retries: 120
secrets:
  db_password:
    file: ./.secrets/db_password
"""

# 4 × 32 random hex characters a row, 100 000 rows a batch: about 22 MiB on disk a batch.
FILL = (
    "INSERT INTO big SELECT g, md5(random()::text) || md5(random()::text)"
    " || md5(random()::text) || md5(random()::text) FROM generate_series(1, 100000) g;"
)


def log(message):
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def sh(*args, check=True, **kw):
    out = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    if check and out.returncode != 0:
        raise RuntimeError(f"`{' '.join(map(str, args))}` exited {out.returncode}:\n{out.stdout}{out.stderr}")
    return out


def timed(*args, **kw):
    start = time.monotonic()
    sh(*args, **kw)
    return time.monotonic() - start


def timed_shell(script):
    start = time.monotonic()
    sh("sh", "-c", script)
    return time.monotonic() - start


class Stack:
    def __init__(self, work):
        self.name = f"bench{os.getpid()}bk"
        self.root = work / self.name
        self.clone = work / "app"
        self.db = f"{self.name}-db"

    def __enter__(self):
        try:
            sh(DEPLOY, "init", self.root)
            secret = self.root / "code" / ".secrets" / "db_password"
            secret.write_text(os.urandom(12).hex() + "\n")
            with open(self.root / "deploy.yml", "a") as f:
                f.write(f"project: {self.name}\nmin_free_space: 1GiB\nhealth_timeout: 120s\n")
            self.clone.mkdir()
            (self.clone / "docker-compose.yml").write_text(COMPOSE)
            sh("git", "init", "-q", "-b", "main", self.clone)
            sh("git", "-C", self.clone, "add", "-A")
            sh("git", *GIT_ID, "-C", self.clone, "commit", "-q", "-m", "db")
            sh("git", "-C", self.clone, "push", "-q", self.root / "code.git", "main")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        sh(DEPLOY, "down", "--root", self.root, check=False)
        ids = sh("docker", "ps", "-aq", "--filter", f"label=deploy.project={self.name}", check=False)
        if ids.stdout.split():
            sh("docker", "rm", "-f", *ids.stdout.split(), check=False)
        nets = sh("docker", "network", "ls", "-q", "--filter", f"label=deploy.project={self.name}", check=False)
        if nets.stdout.split():
            sh("docker", "network", "rm", *nets.stdout.split(), check=False)

    def psql(self, sql):
        return sh("docker", "exec", self.db, "psql", "-X", "-q", "-tA", "-U", "postgres", "-c", sql).stdout.strip()

    def fill(self, size_gb):
        self.psql("CREATE TABLE IF NOT EXISTS big (id int, pad text)")
        want = int(size_gb * (1 << 30))
        for _ in range(2000):  # bounded: 2000 batches is far past any size asked for
            size = int(self.psql("SELECT pg_database_size(current_database())"))
            if size >= want:
                return size
            self.psql(FILL)
        raise RuntimeError("the database did not grow")


def spread(values, unit="s"):
    return f"{statistics.median(values):.1f} {unit} ({min(values):.1f}–{max(values):.1f})"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-gb", type=float, default=1.0)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--write", action="store_true", help="put the table in BENCHMARKS.md")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt()))

    log("building the release binary")
    sh("cargo", "build", "--release", "--locked", "--quiet", cwd=REPO)
    work = Path(tempfile.mkdtemp(prefix="deploy-bench-backups-"))
    rows = {k: [] for k in ("pg_dump", "backup", "pg_restore", "restore-db")}
    ratios = {"backup": [], "restore-db": []}
    try:
        with Stack(work) as stack:
            log(f"filling the database to {args.size_gb} GiB")
            size = stack.fill(args.size_gb)
            log(f"database: {size / (1 << 30):.2f} GiB")
            plain = work / "plain.dump"
            for run in range(args.runs):
                log(f"run {run + 1}/{args.runs}")
                rows["pg_dump"].append(timed_shell(
                    f"docker exec {stack.db} pg_dump -Fc -U postgres postgres > '{plain}'"))
                rows["backup"].append(timed(DEPLOY, "backup", "--root", stack.root))
                dump = max((stack.root / "backups").glob("*.dump"), key=lambda f: f.stat().st_mtime)
                rows["pg_restore"].append(timed_shell(
                    f"docker exec -i {stack.db} pg_restore --clean --if-exists --single-transaction"
                    f" -U postgres -d postgres < '{plain}'"))
                rows["restore-db"].append(timed(DEPLOY, "restore-db", "--root", stack.root, dump.name))
                ratios["backup"].append(rows["backup"][-1] / rows["pg_dump"][-1])
                ratios["restore-db"].append(rows["restore-db"][-1] / rows["pg_restore"][-1])
                dump_size = dump.stat().st_size
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = [
        f"Database: {size / (1 << 30):.2f} GiB on disk (`pg_database_size`), dump {dump_size / (1 << 20):.0f} MiB;"
        f" {args.runs} runs, {datetime.now():%Y-%m-%d}, commit "
        + sh("git", "rev-parse", "--short=12", "HEAD", cwd=REPO).stdout.strip() + ".",
        "",
        "| step | by hand | `deploy` | `deploy` / by hand |",
        "|---|---|---|---|",
        f"| dump | `pg_dump -Fc`: {spread(rows['pg_dump'])} | `deploy backup`: {spread(rows['backup'])} |"
        f" {statistics.median(ratios['backup']):.2f}× |",
        f"| restore | `pg_restore --single-transaction`: {spread(rows['pg_restore'])} |"
        f" `deploy restore-db`: {spread(rows['restore-db'])} | {statistics.median(ratios['restore-db']):.2f}× |",
    ]
    text = "\n".join(table)
    print(text)
    if args.write:
        current = BENCHMARKS.read_text()
        start, end = current.index(BEGIN) + len(BEGIN), current.index(END)
        BENCHMARKS.write_text(current[:start] + "\n" + text + "\n" + current[end:])
        log("wrote BENCHMARKS.md")


if __name__ == "__main__":
    main()
