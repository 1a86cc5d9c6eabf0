"""BPT-style example app for `deploy`: a tiny web server backed by PostgreSQL.

GET /        records a visit in the `visits` table and shows the app version
             and the number of visits so far
GET /health  200 "ok" when the database answers `SELECT 1`, else 503

Configuration (environment): PORT (default 80), DATABASE_HOST, DATABASE_NAME,
DATABASE_USER, DATABASE_PASSWORD_FILE (a file holding the password, e.g. a
compose secret). The version is read from /app/VERSION at start-up.

Standard library + psycopg2 only. There is deliberately no SIGTERM handler: as
PID 1 in a container the process ignores SIGTERM (like many real apps), so
`docker stop` has to fall back to SIGKILL after its timeout.
"""

import html
import os
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2

VERSION_FILE = "/app/VERSION"
CONNECT_ATTEMPTS = 5  # per request, so a database that is still starting is waited for
RETRY_DELAY = 1.0  # seconds between attempts
CONNECT_TIMEOUT = 3  # seconds, per attempt


def read_version():
    # /app/VERSION in the image; next to this file when run from a checkout
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "VERSION")
    for path in (VERSION_FILE, here):
        try:
            with open(path, encoding="utf-8") as f:
                return f.read().strip()
        except OSError:
            continue
    return "unknown"


VERSION = read_version()


def log(message, stream=sys.stdout):
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    # flush: stdout is block-buffered when it is not a terminal (docker logs)
    print(f"{stamp} {message}", file=stream, flush=True)


def db_password():
    path = os.environ.get("DATABASE_PASSWORD_FILE")
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        # like the postgres entrypoint's $(<file): trailing newlines are not part of it
        return f.read().rstrip("\r\n")


def connect(attempts=CONNECT_ATTEMPTS):
    last_error = None
    for attempt in range(attempts):
        try:
            return psycopg2.connect(
                host=os.environ.get("DATABASE_HOST", "localhost"),
                dbname=os.environ.get("DATABASE_NAME", "postgres"),
                user=os.environ.get("DATABASE_USER", "postgres"),
                password=db_password(),
                connect_timeout=CONNECT_TIMEOUT,
            )
        except (psycopg2.OperationalError, OSError) as e:
            last_error = e
            if attempt + 1 < attempts:
                time.sleep(RETRY_DELAY)
    raise last_error


# CREATE TABLE IF NOT EXISTS can still fail when two sessions run it at once;
# serialise it within this process.
_schema_lock = threading.Lock()


def ensure_schema(conn):
    with _schema_lock:
        with conn.cursor() as cur:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS visits ("
                " id serial PRIMARY KEY,"
                " at timestamptz DEFAULT now())"
            )
        conn.commit()


def record_visit():
    """Insert a visit and return the number of visits so far."""
    conn = connect()
    try:
        ensure_schema(conn)
        with conn.cursor() as cur:
            cur.execute("INSERT INTO visits DEFAULT VALUES")
            cur.execute("SELECT count(*) FROM visits")
            (count,) = cur.fetchone()
        conn.commit()
        return count
    finally:
        conn.close()


def database_ok():
    try:
        conn = connect(attempts=1)
    except Exception:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone() == (1,)
    except Exception:
        return False
    finally:
        conn.close()


PAGE = """<!doctype html>
<html>
<head><meta charset="utf-8"><title>BPT example</title></head>
<body>
<h1>BPT example</h1>
<p>version: {version}</p>
<p>visits: {visits}</p>
</body>
</html>
"""


class Handler(BaseHTTPRequestHandler):
    server_version = "bpt"

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/":
            self.index()
        elif path == "/health":
            if database_ok():
                self.reply(200, "text/plain", "ok")
            else:
                self.reply(503, "text/plain", "database unavailable")
        else:
            self.reply(404, "text/plain", "not found")

    def index(self):
        try:
            visits = record_visit()
        except Exception as e:
            log(f"database error: {type(e).__name__}: {str(e).strip()}", sys.stderr)
            self.reply(503, "text/plain", "database unavailable")
            return
        page = PAGE.format(version=html.escape(VERSION), visits=visits)
        self.reply(200, "text/html", page)

    def reply(self, code, content_type, body):
        data = body.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    # one line per request on stdout (send_response calls this)
    def log_request(self, code="-", size="-"):
        code = getattr(code, "value", code)
        log(f'{self.client_address[0]} "{self.requestline}" {code}')

    # anything else http.server has to say (bad requests, ...) goes to stderr
    def log_message(self, format, *args):
        log(f"{self.client_address[0]} {format % args}", sys.stderr)


def main():
    port = int(os.environ.get("PORT", "80"))
    httpd = ThreadingHTTPServer(("", port), Handler)
    httpd.daemon_threads = True
    log(f"bpt {VERSION} listening on port {port}")
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C when run by hand
        pass


if __name__ == "__main__":
    main()
