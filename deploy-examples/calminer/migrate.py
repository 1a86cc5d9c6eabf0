"""Applies the SQL files of migrations/ in name order, each once, each in its own
transaction, recording them in `schema_migrations`. `deploy` runs it as the release command
(`x-deploy.release`), in the new image, before the new code serves.
"""

import os
import sys
import time

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
MIGRATIONS = os.path.join(HERE, "migrations")


def password():
    path = os.environ.get("DATABASE_PASSWORD_FILE")
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return f.read().rstrip("\r\n")


def connect(attempts=5):
    for attempt in range(attempts):
        try:
            return psycopg2.connect(
                host=os.environ.get("DATABASE_HOST", "localhost"),
                dbname=os.environ.get("DATABASE_NAME", "postgres"),
                user=os.environ.get("DATABASE_USER", "postgres"),
                password=password(),
                connect_timeout=3,
            )
        except psycopg2.OperationalError:
            if attempt + 1 == attempts:
                raise
            time.sleep(1)


def shipped():
    return sorted(f for f in os.listdir(MIGRATIONS) if f.endswith(".sql"))


def applied(cur):
    cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY)")
    cur.execute("SELECT name FROM schema_migrations")
    return {r[0] for r in cur.fetchall()}


def pending():
    with connect() as conn, conn.cursor() as cur:
        done = applied(cur)
    return [m for m in shipped() if m not in done]


def main():
    conn = connect()
    with conn, conn.cursor() as cur:
        done = applied(cur)
    for name in shipped():
        if name in done:
            continue
        with open(os.path.join(MIGRATIONS, name), encoding="utf-8") as f:
            sql = f.read()
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            cur.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
        print(f"applied {name}", flush=True)
    print(f"schema up to date ({len(shipped())} migrations)", flush=True)


if __name__ == "__main__":
    main()
