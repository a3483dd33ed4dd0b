#!/usr/bin/env python3
"""A kuiperbelt chat app in the Python standard library.

A forking HTTP server (one process per request, like a prefork app), so no
state lives in memory: members (session id, name, room) are kept in SQLite.
kuiperbelt holds the WebSockets and calls this app:

  GET  /connect    connect callback: accept clients with a ?name=, refuse others;
                   put the session in its room's channel (?room=, default lobby)
  POST /establish  a client is connected: announce the join to its room
  POST /receive    a client said something: send it to the others in its room
  POST /close      a client left: announce it to its room

The app talks back only through kuiperbelt's HTTP API: one POST /send per
line, to the room's channel (X-Kuiperbelt-Channel), leaving the speaker out
(X-Kuiperbelt-Exclude).
"""
import argparse
import http.client
import http.server
import json
import re
import signal
import socketserver
import sqlite3
import urllib.parse
import uuid

SESSION = "X-Kuiperbelt-Session"
CHANNEL = "X-Kuiperbelt-Channel"
EXCLUDE = "X-Kuiperbelt-Exclude"
NO_SESSIONS = "channel has no sessions."
DEFAULT_ROOM = "lobby"
# A room is its channel's name, so it must be a valid one (printable ASCII
# without comma or space, at most 200 bytes); this app takes a plain subset.
ROOM = re.compile(r"[A-Za-z0-9_-]{1,32}")


def db(path):
    conn = sqlite3.connect(path, timeout=10)
    # A member is "ready" once kuiperbelt's establish callback has run: from
    # then on its session is in its room's channel.
    conn.execute(
        "CREATE TABLE IF NOT EXISTS members (session TEXT PRIMARY KEY, name TEXT NOT NULL,"
        " room TEXT NOT NULL, ready INTEGER NOT NULL DEFAULT 0)"
    )
    # A member list from before rooms: everyone was in the lobby.
    if "room" not in {column[1] for column in conn.execute("PRAGMA table_info(members)")}:
        conn.execute(f"ALTER TABLE members ADD COLUMN room TEXT NOT NULL DEFAULT '{DEFAULT_ROOM}'")
    return conn


def broadcast(kuiperbelt, conn, room, line, speaker):
    """One POST /send to everyone in the room's channel but the speaker."""
    url = urllib.parse.urlsplit(kuiperbelt)
    http_conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=10)
    body = line.encode("utf-8")
    http_conn.putrequest("POST", "/send")
    http_conn.putheader(CHANNEL, room)
    http_conn.putheader(EXCLUDE, speaker)
    http_conn.putheader("Content-Type", "text/plain; charset=utf-8")
    http_conn.putheader("Content-Length", str(len(body)))
    http_conn.endheaders(body)
    reply = json.loads(http_conn.getresponse().read() or b"{}")
    http_conn.close()
    # No session is in the channel on any kuiperbelt node (the speaker
    # counts, excluded or not): the room's ready members are all gone
    # without a close callback (closed with POST /close, or kuiperbelt
    # restarted), so drop them.
    if any(e.get("error") == NO_SESSIONS for e in reply.get("errors", [])):
        conn.execute("DELETE FROM members WHERE room = ? AND ready = 1", (room,))


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
        query = urllib.parse.parse_qs(url.query)
        name = query.get("name", [""])[0].strip()[:32]
        if not name:
            return self.reply(401, b"a name is required")
        room = query.get("room", [""])[0].strip() or DEFAULT_ROOM
        if not ROOM.fullmatch(room):
            return self.reply(400, b"a room is 1-32 letters, digits, - or _")
        session = uuid.uuid4().hex
        with db(self.db_path) as conn:
            conn.execute("INSERT INTO members (session, name, room) VALUES (?, ?, ?)", (session, name, room))
        # kuiperbelt puts the session in the channel once it is addressable.
        self.reply(200, f"* welcome to {room}, {name}".encode(), [(SESSION, session), (CHANNEL, room)])

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        session = self.headers.get(SESSION, "")
        with db(self.db_path) as conn:
            row = conn.execute("SELECT name, room FROM members WHERE session = ?", (session,)).fetchone()
            name, room = row if row else (None, None)
            if name and self.path == "/establish":
                # Announced to the others in the room; the newcomer joins the
                # channel once this callback has answered 200.
                broadcast(self.kuiperbelt, conn, room, f"* {name} joined", session)
                conn.execute("UPDATE members SET ready = 1 WHERE session = ?", (session,))
            elif name and self.path == "/receive":
                line = body.decode("utf-8", "replace").strip()
                broadcast(self.kuiperbelt, conn, room, f"{name}: {line}", session)
            elif name and self.path == "/close":
                conn.execute("DELETE FROM members WHERE session = ?", (session,))
                broadcast(self.kuiperbelt, conn, room, f"* {name} left", session)
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
