"""CalMiner-shaped example app for `deploy`: a small API over PostgreSQL whose schema is
changed by migrations that `deploy` runs as the release command, before this code serves.

GET  /                 the version, the migrations applied, the columns of `scenarios`,
                       and every scenario (one per line: `scenario: <name>`)
POST /scenarios?name=  adds a scenario
GET  /health           200 "ok" when the database answers and every migration this code
                       ships is applied, else 503

At start the app refuses to run (exit 1) when a migration it ships is not applied yet: code
never serves on a schema older than it needs. Configuration (environment): PORT (8000),
DATABASE_HOST, DATABASE_NAME, DATABASE_USER, DATABASE_PASSWORD_FILE.

Standard library + psycopg2 only.
"""

import html
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import migrate

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    try:
        with open(os.path.join(HERE, "VERSION"), encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


VERSION = read_version()


def page():
    with migrate.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM schema_migrations ORDER BY name")
        applied = [r[0] for r in cur.fetchall()]
        cur.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'scenarios' ORDER BY ordinal_position"
        )
        columns = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT name FROM scenarios ORDER BY id")
        names = [r[0] for r in cur.fetchall()]
    lines = [
        f"version: {VERSION}",
        f"migrations: {','.join(applied)}",
        f"columns: {','.join(columns)}",
        f"scenarios: {len(names)}",
    ]
    lines += [f"scenario: {html.escape(n)}" for n in names]
    return "\n".join(lines) + "\n"


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = urlparse(self.path).path
        try:
            if path == "/health":
                missing = migrate.pending()
                if missing:
                    return self.reply(503, f"migrations not applied: {missing}\n")
                return self.reply(200, "ok\n")
            if path == "/":
                return self.reply(200, page())
            return self.reply(404, "not found\n")
        except Exception as e:  # the database is down, say
            return self.reply(503, f"error: {e}\n")

    def do_POST(self):
        url = urlparse(self.path)
        if url.path != "/scenarios":
            return self.reply(404, "not found\n")
        name = parse_qs(url.query).get("name", [""])[0]
        if not name:
            return self.reply(400, "name is required\n")
        with migrate.connect() as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO scenarios (name) VALUES (%s)", (name,))
        return self.reply(201, f"added {name}\n")

    def log_message(self, fmt, *args):
        pass


def main():
    missing = migrate.pending()
    if missing:
        print(f"refusing to start: migrations not applied: {missing}", file=sys.stderr, flush=True)
        sys.exit(1)
    port = int(os.environ.get("PORT", "8000"))
    print(f"calminer {VERSION} listening on {port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
