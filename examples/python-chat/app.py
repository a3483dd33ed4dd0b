#!/usr/bin/env python3
"""A kuiperbelt chat app in the Python standard library.

A forking HTTP server (one process per request, like a prefork app), so no
state lives in memory: members are kept in SQLite. kuiperbelt holds the
WebSockets and calls this app:

  GET  /connect    connect callback: accept clients with a ?name=, refuse others
  POST /establish  a client is connected: announce the join
  POST /receive    a client said something: broadcast it
  POST /close      a client left: announce it

The app talks back only through kuiperbelt's HTTP API (POST /send with one
X-Kuiperbelt-Session header per recipient).
"""
import argparse
import http.client
import http.server
import json
import signal
import socketserver
import sqlite3
import urllib.parse
import uuid

SESSION = "X-Kuiperbelt-Session"
NOT_FOUND = "session is not found."


def db(path):
    conn = sqlite3.connect(path, timeout=10)
    # A member is "ready" once kuiperbelt's establish callback said its
    # connection is addressable; until then pushes to it are "not found".
    conn.execute(
        "CREATE TABLE IF NOT EXISTS members"
        " (session TEXT PRIMARY KEY, name TEXT NOT NULL, ready INTEGER NOT NULL DEFAULT 0)"
    )
    return conn


def broadcast(kuiperbelt, conn, line):
    """One POST /send naming every ready member."""
    sessions = [row[0] for row in conn.execute("SELECT session FROM members WHERE ready = 1")]
    if not sessions:
        return
    url = urllib.parse.urlsplit(kuiperbelt)
    http_conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)
    body = line.encode("utf-8")
    http_conn.putrequest("POST", "/send")
    for session in sessions:
        http_conn.putheader(SESSION, session)
    http_conn.putheader("Content-Type", "text/plain; charset=utf-8")
    http_conn.putheader("Content-Length", str(len(body)))
    http_conn.endheaders(body)
    reply = json.loads(http_conn.getresponse().read() or b"{}")
    http_conn.close()
    # kuiperbelt names the sessions it no longer holds (e.g. after it was
    # restarted, or a close callback this app missed while redeploying).
    gone = [e["session"] for e in reply.get("errors", []) if e.get("error") == NOT_FOUND]
    conn.executemany("DELETE FROM members WHERE session = ?", [(s,) for s in gone])


class Handler(http.server.BaseHTTPRequestHandler):
    kuiperbelt = "http://127.0.0.1:9180"
    db_path = "chat.sqlite3"

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/connect":
            return self.reply(404, b"not found")
        name = urllib.parse.parse_qs(url.query).get("name", [""])[0].strip()[:32]
        if not name:
            return self.reply(401, b"a name is required")
        session = uuid.uuid4().hex
        with db(self.db_path) as conn:
            conn.execute("INSERT INTO members (session, name) VALUES (?, ?)", (session, name))
        self.reply(200, f"* welcome, {name}".encode(), [(SESSION, session)])

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        session = self.headers.get(SESSION, "")
        with db(self.db_path) as conn:
            row = conn.execute("SELECT name FROM members WHERE session = ?", (session,)).fetchone()
            name = row[0] if row else None
            if name and self.path == "/establish":
                # Announced to the others; the newcomer is addressable once
                # this callback has answered 200.
                broadcast(self.kuiperbelt, conn, f"* {name} joined")
                conn.execute("UPDATE members SET ready = 1 WHERE session = ?", (session,))
            elif name and self.path == "/receive":
                broadcast(self.kuiperbelt, conn, f"{name}: {body.decode('utf-8', 'replace').strip()}")
            elif name and self.path == "/close":
                conn.execute("DELETE FROM members WHERE session = ?", (session,))
                broadcast(self.kuiperbelt, conn, f"* {name} left")
        self.reply(200)

    def log_message(self, fmt, *args):
        pass


class ForkingHTTPServer(socketserver.ForkingMixIn, http.server.HTTPServer):
    """One child process per request, like a prefork server's workers."""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--kuiperbelt", default="http://127.0.0.1:9180", help="kuiperbelt's push API")
    parser.add_argument("--db", default="chat.sqlite3", help="SQLite file for the member list")
    args = parser.parse_args()
    Handler.kuiperbelt, Handler.db_path = args.kuiperbelt, args.db
    db(args.db).close()  # create the table; members survive a restart of this app
    # SIGTERM stops like Ctrl-C: stop accepting, let the requests in flight
    # finish (closing the server waits for its children), then exit.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with ForkingHTTPServer(("127.0.0.1", args.port), Handler) as server:
        print(f"chat app on http://127.0.0.1:{args.port}, pushing to {args.kuiperbelt}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
