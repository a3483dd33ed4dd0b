#!/usr/bin/env python3
"""Runs the kuiperbelt image with a config rendered by this chart and checks it
end to end: /ping and health, a WebSocket round trip (connect callback, first
message, receive callback, POST /send with the API token), the API kept off the
public port, /metrics, the token read from a Secret-like volume (the chart's
api.token_file) and a rotation of it taking effect without a restart, and a
drain that closes the client with 1001, fires the close callback and exits the
container with 0. Then runs the image as the Go image is run, with no config
mounted and only EKBO_* variables (its default config is the Go project's
config_by_env.yml), for a WebSocket round trip.

The container runs as in the chart: host network (CI has no bridge), read-only
root filesystem, no capabilities, no new privileges, the image's own user.

usage: container_smoke.py --docker DOCKER --image IMAGE --helm HELM --chart DIR
"""

import argparse
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import yaml
from websockets.sync.client import connect as ws_connect

TOKEN = "smoke-test-token"
ROTATED_TOKEN = "smoke-test-token-rotated"
failures = []


def check(ok, what, detail=""):
    print(f"{'PASS' if ok else 'FAIL'}: container: {what}{' (' + detail + ')' if detail and not ok else ''}")
    if not ok:
        failures.append(what)
    return ok


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class App(http.server.BaseHTTPRequestHandler):
    """The app: accepts every client as the session named by ?id=."""

    received = []
    closed = []

    def do_GET(self):
        self.do_POST()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        session = self.headers.get("X-Kuiperbelt-Session", "")
        if path == "/connect":
            sid = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("id", "anon")
            self.send_response(200)
            self.send_header("X-Kuiperbelt-Session", sid)
            self.send_header("Content-Type", "text/plain")
            reply = f"welcome {sid}".encode()
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)
            return
        if path == "/receive":
            App.received.append((session, body.decode()))
        elif path == "/close":
            App.closed.append(session)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def call(method, url, headers=None, data=None, timeout=10):
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_ping(base, limit=20):
    """GET /ping until the container answers (or `limit` seconds): (status, body)."""
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            return call("GET", f"{base}/ping", timeout=1)
        except OSError:
            time.sleep(0.2)
    return None, ""


def render_config(helm, chart, app_port, ports):
    """The ConfigMap's config.yml for a classic sidecar pointed at our app."""
    base = f"http://127.0.0.1:{app_port}"
    out = subprocess.run(
        [helm, "template", "smoke", chart, "--show-only", "templates/configmap.yaml",
         "--set", "mode=sidecar", "--set", "app.image.repository=example/app",
         "--set", f"ports.websocket={ports['ws']}", "--set", f"ports.api={ports['api']}",
         "--set", f"ports.metrics={ports['metrics']}", "--set", "metrics.enabled=true",
         "--set", f"api.token.value={TOKEN}",
         "--set", f"config.callback.connect={base}/connect",
         "--set", f"config.callback.receive={base}/receive",
         "--set", f"config.callback.close={base}/close",
         "--set", "config.drain.announce_delay=0s", "--set", "config.drain.spread=1s",
         "--set", "config.drain.timeout=10s", "--set", "config.log.format=text"],
        check=True, capture_output=True, text=True).stdout
    return yaml.safe_load(out)["data"]["config.yml"]


def write_secret_volume(root, token, generation):
    """root laid out as kubelet lays out a Secret volume (items: key -> token):
    token -> ..data/token, ..data -> ..<generation>; a later call swaps ..data
    atomically, as kubelet does when the Secret changes."""
    gen = os.path.join(root, f"..{generation}")
    os.mkdir(gen)
    os.chmod(gen, 0o755)
    with open(os.path.join(gen, "token"), "w") as f:
        f.write(token)
    os.chmod(os.path.join(gen, "token"), 0o644)
    os.symlink(f"..{generation}", os.path.join(root, "..data_tmp"))
    os.rename(os.path.join(root, "..data_tmp"), os.path.join(root, "..data"))
    if not os.path.lexists(os.path.join(root, "token")):
        os.symlink("..data/token", os.path.join(root, "token"))


def ekbo_only(docker, image, app_port):
    """The image with only EKBO_* variables, as the Go image is run."""
    port = free_port()
    base = f"http://127.0.0.1:{app_port}"
    name = f"kuiperbelt-ekbo-{os.getpid()}"
    App.received.clear()
    run = [docker, "run", "-d", "--name", name, "--network", "host",
           "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
           "-e", f"EKBO_PORT={port}",
           "-e", f"EKBO_CONNECT_CALLBACK_URL={base}/connect",
           "-e", f"EKBO_RECEIVE_CALLBACK_URL={base}/receive",
           image]
    subprocess.run(run, check=True, capture_output=True)
    public = f"http://127.0.0.1:{port}"
    try:
        status, _ = wait_ping(public)
        check(status == 200, "EKBO_* only: GET /ping on EKBO_PORT", f"status {status}")
        with ws_connect(f"ws://127.0.0.1:{port}/connect?id=ekbo", open_timeout=10) as ws:
            check(ws.recv(timeout=10) == "welcome ekbo", "EKBO_* only: EKBO_CONNECT_CALLBACK_URL accepts the client")
            ws.send("via EKBO")
            deadline = time.time() + 10
            while time.time() < deadline and not App.received:
                time.sleep(0.05)
            check(App.received == [("ekbo", "via EKBO")], "EKBO_* only: EKBO_RECEIVE_CALLBACK_URL gets the message", repr(App.received))
            status, body = call("POST", f"{public}/send", {"X-Kuiperbelt-Session": "ekbo"}, b"back")
            check(status == 200 and ws.recv(timeout=10) == "back", "EKBO_* only: POST /send reaches the client", f"{status} {body}")
    except Exception as e:
        check(False, "EKBO_* only run ran to the end", f"{type(e).__name__}: {e}")
    finally:
        logs = subprocess.run([docker, "logs", name], capture_output=True, text=True)
        if failures:
            print("container logs (EKBO_* only):\n" + logs.stdout + logs.stderr)
        subprocess.run([docker, "rm", "-f", name], capture_output=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docker", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--helm", required=True)
    ap.add_argument("--chart", required=True)
    a = ap.parse_args()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ports = {"ws": free_port(), "api": free_port(), "metrics": free_port()}
    config = render_config(a.helm, a.chart, server.server_address[1], ports)
    print(f"container: rendered config (sidecar mode):\n{config}")
    cfg = tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False)
    cfg.write(config)
    cfg.close()
    os.chmod(cfg.name, 0o644)

    # The token as the chart passes it: its Secret mounted as a directory, the
    # file named by api.token_file.
    token_file = (yaml.safe_load(config).get("api") or {}).get("token_file", "")
    check(token_file.endswith("/token"), "the rendered config names the token file (api.token_file)", repr(token_file))
    secret_dir = tempfile.mkdtemp(prefix="kb-smoke-token.")
    os.chmod(secret_dir, 0o755)
    write_secret_volume(secret_dir, TOKEN + "\n", 1)

    name = f"kuiperbelt-smoke-{os.getpid()}"
    run = [a.docker, "run", "-d", "--name", name, "--network", "host",
           "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
           "-v", f"{secret_dir}:{os.path.dirname(token_file) or '/nonexistent'}:ro",
           "-v", f"{cfg.name}:/etc/kuiperbelt/config.yml:ro", a.image]
    subprocess.run(run, check=True, capture_output=True)
    public = f"http://127.0.0.1:{ports['ws']}"
    api = f"http://127.0.0.1:{ports['api']}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        status, body = wait_ping(public)
        check(status == 200 and json.loads(body) == {"result": "OK"}, "GET /ping answers {\"result\":\"OK\"}", f"status {status}")
        check(call("GET", f"{public}/healthz")[0] == 200, "GET /healthz 200")
        check(call("GET", f"{public}/readyz")[0] == 200, "GET /readyz 200 before the drain")
        # kubectl exec POD -c kuiperbelt -- kuiperbelt ctl status: the chart's
        # config and token file give ctl its API and token, no flags needed.
        ctl = subprocess.run([a.docker, "exec", name, "/usr/local/bin/kuiperbelt", "ctl", "status"],
                             capture_output=True, text=True, timeout=30)
        check(ctl.returncode == 0 and "ready:       yes" in ctl.stdout,
              "docker exec ... kuiperbelt ctl status (chart defaults, token from the file)",
              f"exit {ctl.returncode}: {ctl.stdout}{ctl.stderr}")
        check(call("POST", f"{public}/send", {"X-Kuiperbelt-Session": "x"}, b"x")[0] == 404,
              "POST /send on the public port is 404 (API on its own listener)")
        check(call("POST", f"{api}/send", {"X-Kuiperbelt-Session": "x"}, b"x")[0] == 401,
              "POST /send without the token is 401")

        with ws_connect(f"ws://127.0.0.1:{ports['ws']}/connect?id=alice", open_timeout=10) as ws:
            check(ws.recv(timeout=10) == "welcome alice", "connect callback body arrives as the first message")
            ws.send("hello from the client")
            deadline = time.time() + 10
            while time.time() < deadline and not App.received:
                time.sleep(0.05)
            check(App.received == [("alice", "hello from the client")], "client message reaches the receive callback", repr(App.received))
            status, body = call("POST", f"{api}/send", {**auth, "X-Kuiperbelt-Session": "alice"}, b"pushed by the app")
            check(status == 200 and json.loads(body).get("result") == "OK", "POST /send with the token answers OK", f"{status} {body}")
            check(ws.recv(timeout=10) == "pushed by the app", "the pushed message arrives over the WebSocket")

            # The Secret rotated: kuiperbelt re-reads the file, no restart.
            write_secret_volume(secret_dir, ROTATED_TOKEN + "\n", 2)
            rotated = {"Authorization": f"Bearer {ROTATED_TOKEN}"}
            deadline = time.time() + 10
            while True:
                status, body = call("POST", f"{api}/send", {**rotated, "X-Kuiperbelt-Session": "alice"}, b"after rotation")
                if status == 200 or time.time() > deadline:
                    break
                time.sleep(0.2)
            check(status == 200 and ws.recv(timeout=10) == "after rotation",
                  "token file rotated: POST /send with the new token answers OK within 10 s", f"{status} {body}")
            check(call("POST", f"{api}/send", {**auth, "X-Kuiperbelt-Session": "alice"}, b"x")[0] == 401,
                  "token file rotated: the old token is 401")
            auth = rotated

            status, body = call("GET", f"http://127.0.0.1:{ports['metrics']}/metrics")
            check(status == 200 and "kuiperbelt_connections 1" in body, "metrics listener: kuiperbelt_connections 1")

            status, _ = call("POST", f"{api}/drain", auth, b"", timeout=30)
            check(status == 200, "POST /drain answers 200 when the drain is done", f"status {status}")
            code = None
            try:
                ws.recv(timeout=10)
            except Exception:  # the close frame ends the connection
                code = ws.close_code
            check(code == 1001, "the client is closed with 1001 by the drain", f"close code {code}")
            deadline = time.time() + 10
            while time.time() < deadline and not App.closed:
                time.sleep(0.05)
            check(App.closed == ["alice"], "close callback fired during the drain", repr(App.closed))
            check(call("GET", f"{public}/readyz")[0] == 503, "GET /readyz 503 after the drain")
        # kubelet's SIGTERM after the preStop drain: the container exits 0.
        subprocess.run([a.docker, "stop", "-t", "20", name], capture_output=True, timeout=40)
        exit_code = subprocess.run([a.docker, "inspect", "-f", "{{.State.ExitCode}}", name],
                                   capture_output=True, text=True).stdout.strip()
        check(exit_code == "0", "SIGTERM after the drain: the container exits 0", f"exit {exit_code}")
    except Exception as e:  # report, do not hide the failure
        check(False, "smoke test ran to the end", f"{type(e).__name__}: {e}")
    finally:
        logs = subprocess.run([a.docker, "logs", name], capture_output=True, text=True)
        if failures:
            print("container logs:\n" + logs.stdout + logs.stderr)
        subprocess.run([a.docker, "rm", "-f", name], capture_output=True)
        os.unlink(cfg.name)
        shutil.rmtree(secret_dir, ignore_errors=True)
    try:
        ekbo_only(a.docker, a.image, server.server_address[1])
    finally:
        server.shutdown()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
