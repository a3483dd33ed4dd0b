#!/usr/bin/env python3
"""Proves the chart's Grafana dashboard and alerts query metrics kuiperbelt
really exposes, through a real Prometheus.

Starts a tiny app (the callbacks), a real kuiperbelt binary calling it, and a
real Prometheus scraping kuiperbelt's /metrics every second (with the alert
rules loaded when --rules is given); puts a little load on kuiperbelt for
--load-seconds (WebSocket clients sending messages, POST /send pushes, one
refused connect, one push to an unknown id); then evaluates through
Prometheus's HTTP API (/api/v1/query):

  - every PromQL expression of the dashboard (its panels' targets, nested
    rows included), with the templating variables replaced by the labels this
    scrape gives (namespace="ci", job="kuiperbelt", pod="kb-0") and
    $__rate_interval by a concrete window: each must parse and return at least
    one series;
  - each templating variable's label_values(selector, label) query: the
    selector must return series carrying that label;
  - every alert expression of --rules: each must parse (data not required);
    and Prometheus must have loaded every rule and evaluated it without error;
  - that the load is visible: connections open, connects refused,
    pushes, not_found errors, client messages, receive callbacks.

Metrics the final binary adds (kuiperbelt_cluster_*, and the process
collector's process_*) may be absent from an older binary: with
--allow-missing-new, expressions using them may return no series (reported as
MISSING); without it that is a failure.

Prints one PASS/FAIL line per check; exits 1 on any failure. Every process it
starts is stopped, and its temporary directory removed, before it exits.

usage: dashboard_queries.py --binary KUIPERBELT --dashboard DASHBOARD.json
                            [--rules RULES.yaml]... [--prometheus PATH]
                            [--load-seconds 20] [--allow-missing-new]
"""

import argparse
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml
from websockets.sync.client import connect as ws_connect

# The labels Prometheus gives kuiperbelt's series here (a PodMonitor gives a
# pod's series the same ones), substituted for the dashboard's variables.
SCRAPE_LABELS = {"namespace": "ci", "pod": "kb-0"}
JOB = "kuiperbelt"
# Grafana's built-in variables, as concrete values for a 1s scrape interval.
BUILTINS = {"__rate_interval": "10s", "__interval": "5s", "__range": "5m", "__range_s": "300",
            "__interval_ms": "5000"}
# Metrics of the final binary an older one may lack (--allow-missing-new).
NEW_METRICS = re.compile(r"\b(kuiperbelt_cluster_[a-z_]+|process_[a-z_]+)")
CLIENTS = 4

failures = []


class Abort(Exception):
    """A check failed that the rest depends on (already reported)."""


def check(ok, what, detail=""):
    print(f"{'PASS' if ok else 'FAIL'}: {what}" + (f" ({detail})" if detail and not ok else ""), flush=True)
    if not ok:
        failures.append(what)
    return ok


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(method, url, headers=(), body=b"", timeout=10):
    """An HTTP request; headers is a list of pairs (a name may repeat)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.putrequest(method, u.path + (f"?{u.query}" if u.query else ""))
        for k, v in headers:
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


class App(http.server.BaseHTTPRequestHandler):
    """The app's callbacks: connect accepts ?id=<id> as that session (403
    for id=refuse), receive and close answer 200."""

    protocol_version = "HTTP/1.1"
    received = 0
    lock = threading.Lock()

    def do_GET(self):
        self.do_POST()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        path, _, query = self.path.partition("?")
        headers = {"Content-Length": "0"}
        status = 200
        if path == "/connect":
            sid = urllib.parse.parse_qs(query).get("id", ["anon"])[0]
            if sid == "refuse":
                status = 403
            else:
                headers["X-Kuiperbelt-Session"] = sid
        elif path == "/receive":
            with App.lock:
                App.received += 1
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()

    def log_message(self, *args):
        pass


class Client(threading.Thread):
    """A WebSocket client: sends a message every 0.1s while `sending` is set,
    reads whatever kuiperbelt pushes, closes when `stop` is set."""

    def __init__(self, url, sending, stop):
        super().__init__(daemon=True)
        self.url, self.sending, self.stop = url, sending, stop
        self.received = 0
        self.error = None
        self.connected = threading.Event()

    def run(self):
        try:
            with ws_connect(self.url, open_timeout=10) as ws:
                self.connected.set()
                n = 0
                next_send = time.monotonic()
                while not self.stop.is_set():
                    if self.sending.is_set() and time.monotonic() >= next_send:
                        ws.send(f"message {n}")
                        n += 1
                        next_send += 0.1
                    try:
                        ws.recv(timeout=0.05)
                        self.received += 1
                    except TimeoutError:
                        pass
        except Exception as e:  # reported by the caller
            self.error = f"{type(e).__name__}: {e}"
            self.connected.set()


class Prometheus:
    def __init__(self, url):
        self.url = url

    def get(self, path, **params):
        url = f"{self.url}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            try:
                return json.load(e)
            except ValueError:
                return {"status": "error", "error": f"HTTP {e.code}"}

    def query(self, expr):
        """(ok, result or error message)."""
        r = self.get("/api/v1/query", query=expr)
        if r.get("status") != "success":
            return False, f"{r.get('errorType', '')}: {r.get('error', r)}"
        return True, r["data"]["result"]


def substitute(expr, variables):
    """expr with Grafana's $var, ${var}, ${var:format} and [[var]] replaced.
    Raises KeyError for a variable it does not know."""
    def value(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return variables[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]", value, expr)


def panel_targets(panels, path=()):
    """(panel path, refId, expr) of every target, rows' nested panels too."""
    for p in panels:
        title = path + (p.get("title") or f"panel {p.get('id')}",)
        for t in p.get("targets") or []:
            if t.get("expr") is not None:
                yield " / ".join(title), t.get("refId", "?"), t["expr"]
        yield from panel_targets(p.get("panels") or [], title)


def describe(result):
    """A short rendering of a query result for the log."""
    out = []
    for s in result[:3]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s["metric"].items()) if k not in ("job", "instance", "namespace"))
        out.append(f"{{{labels}}} {s['value'][1]}")
    return "; ".join(out) + (f"; ... ({len(result)} series)" if len(result) > 3 else "")


def wait_for(what, probe, timeout, proc=None):
    """Polls probe() until it is true; fails the check on timeout or when
    proc (the process that should answer) exits."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            check(False, what, f"the process exited with status {proc.returncode}")
            return False
        try:
            if probe():
                return True
        except Exception as e:
            last = e
        time.sleep(0.2)
    check(False, what, f"timed out after {timeout}s" + (f": {last}" if last else ""))
    return False


def stop_process(proc, name, grace=10):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop within {grace}s: killing it", flush=True)
        proc.kill()
        proc.wait()


def load(a, ports):
    """Clients, pushes, one refused connect, one push to an unknown id."""
    ws_base = f"ws://127.0.0.1:{ports['ws']}/connect"
    api = f"http://127.0.0.1:{ports['api']}"
    sending, stop = threading.Event(), threading.Event()
    clients = [Client(f"{ws_base}?id=c{i}", sending, stop) for i in range(CLIENTS)]
    for c in clients:
        c.start()
    for c in clients:
        c.connected.wait(15)
    errors = [c.error for c in clients if c.error]
    check(not errors, f"{CLIENTS} WebSocket clients connected through the connect callback", "; ".join(errors))

    sending.set()
    targets = [("X-Kuiperbelt-Session", f"c{i}") for i in range(CLIENTS)]
    pushes = 0
    deadline = time.monotonic() + a.load_seconds
    while time.monotonic() < deadline:
        status, body = call("POST", f"{api}/send", targets, f"push {pushes}".encode())
        if status != 200:
            check(False, "POST /send to the clients answers 200", f"{status} {body}")
            break
        pushes += 1
        time.sleep(0.1)
    sending.clear()
    # At the end of the load, so the panels' short rate windows see them.
    try:
        ws_connect(f"{ws_base}?id=refuse", open_timeout=10).close()
        check(False, "a connect the app answers 403 is refused", "it was accepted")
    except Exception as e:
        check("403" in str(e), "a connect the app answers 403 is refused", f"{type(e).__name__}: {e}")

    status, body = call("POST", f"{api}/send", [("X-Kuiperbelt-Session", "nobody")], b"lost")
    check(status == 200, "POST /send to an unknown session id answers 200 (counted not_found)", f"{status} {body}")
    print(f"load: {a.load_seconds}s, {pushes} pushes to {CLIENTS} clients, "
          f"{App.received} receive callbacks, {sum(c.received for c in clients)} messages read by the clients",
          flush=True)
    return clients, stop


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", required=True, help="the kuiperbelt binary")
    ap.add_argument("--dashboard", required=True, help="the Grafana dashboard JSON")
    ap.add_argument("--rules", action="append", default=[],
                    help="a Prometheus rule file (groups:) whose expressions must parse (repeatable)")
    ap.add_argument("--prometheus", default="/usr/bin/prometheus")
    ap.add_argument("--load-seconds", type=float, default=20)
    ap.add_argument("--allow-missing-new", "--allow-missing-cluster", dest="allow_missing_new", action="store_true",
                    help="accept no data for expressions on kuiperbelt_cluster_* and process_* metrics")
    a = ap.parse_args()

    with open(a.dashboard) as f:
        dashboard = json.load(f)
    rules = []
    for path in a.rules:
        with open(path) as f:
            found = [r for g in (yaml.safe_load(f) or {}).get("groups", []) for r in g.get("rules", [])]
        check(bool(found), f"{path} holds rules ({len(found)})")
        rules += found

    work = tempfile.mkdtemp(prefix="kb-dashboard.")
    procs = []
    server = None
    stop_clients = None
    clients = []
    missing = []
    # A SIGTERM (e.g. the CI job cancelled) unwinds through the finally below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), App)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        app = f"http://127.0.0.1:{server.server_address[1]}"
        ports = {"ws": free_port(), "api": free_port(), "metrics": free_port(), "prometheus": free_port()}

        config = {
            "port": ports["ws"],
            "api": {"listen": f"127.0.0.1:{ports['api']}"},
            "metrics": {"listen": f"127.0.0.1:{ports['metrics']}"},
            "callback": {"connect": f"{app}/connect", "receive": f"{app}/receive", "close": f"{app}/close"},
            "drain": {"announce_delay": "0s", "spread": "1s", "timeout": "5s"},
            "log": {"level": "warn", "format": "text"},
        }
        with open(os.path.join(work, "kuiperbelt.yml"), "w") as f:
            yaml.safe_dump(config, f)
        kb_log = open(os.path.join(work, "kuiperbelt.log"), "w")
        try:
            kb = subprocess.Popen([a.binary, f"-config={work}/kuiperbelt.yml"], stdout=kb_log,
                                  stderr=subprocess.STDOUT, cwd=work)
        except OSError as e:
            check(False, f"kuiperbelt starts ({a.binary})", str(e))
            raise Abort()
        kb_log.close()
        procs.append((kb, "kuiperbelt", kb_log.name))
        if not wait_for("kuiperbelt answers /ping",
                        lambda: call("GET", f"http://127.0.0.1:{ports['ws']}/ping", timeout=1)[0] == 200, 15, kb):
            raise Abort()
        check(True, f"kuiperbelt started ({a.binary})")

        prom_config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{
                "job_name": JOB,
                "static_configs": [{"targets": [f"127.0.0.1:{ports['metrics']}"], "labels": SCRAPE_LABELS}],
            }],
        }
        for i, path in enumerate(a.rules):
            shutil.copy(path, os.path.join(work, f"rules-{i}.yaml"))
            prom_config.setdefault("rule_files", []).append(os.path.join(work, f"rules-{i}.yaml"))
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            yaml.safe_dump(prom_config, f)
        prom_log = open(os.path.join(work, "prometheus.log"), "w")
        try:
            prom_proc = subprocess.Popen(
                [a.prometheus, f"--config.file={work}/prometheus.yml", f"--storage.tsdb.path={work}/tsdb",
                 f"--web.listen-address=127.0.0.1:{ports['prometheus']}", "--log.level=warn"],
                stdout=prom_log, stderr=subprocess.STDOUT, cwd=work)
        except OSError as e:
            check(False, f"Prometheus starts ({a.prometheus})", str(e))
            raise Abort()
        prom_log.close()
        procs.append((prom_proc, "prometheus", prom_log.name))
        prom = Prometheus(f"http://127.0.0.1:{ports['prometheus']}")
        if not wait_for("Prometheus is ready",
                        lambda: urllib.request.urlopen(f"{prom.url}/-/ready", timeout=1).status == 200, 30,
                        prom_proc):
            raise Abort()
        if not wait_for("Prometheus scrapes kuiperbelt's /metrics (up == 1)",
                        lambda: [s for s in prom.query(f'up{{job="{JOB}"}} == 1')[1]], 30, prom_proc):
            raise Abort()
        check(True, f"Prometheus ({a.prometheus}) scrapes kuiperbelt's /metrics every 1s")

        clients, stop_clients = load(a, ports)
        time.sleep(2)  # the last scrapes

        # The dashboard's variables, then its expressions.
        variables = dict(BUILTINS, job=JOB, **SCRAPE_LABELS)
        templating = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
        for name in ("namespace", "job", "pod"):
            v = templating.get(name)
            q = v.get("query") if v else None
            q = q.get("query") if isinstance(q, dict) else q
            m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q or "")
            if not check(bool(v) and v.get("type") == "query" and bool(m) and "kuiperbelt_build_info" in m.group(1),
                         f"dashboard variable ${name}: label_values(<kuiperbelt_build_info selector>, {name})", repr(q)):
                continue
            ok, res = prom.query(substitute(m.group(1), variables))
            values = sorted({s["metric"].get(m.group(2)) for s in res}) if ok else []
            check(ok and variables[name] in values,
                  f"dashboard variable ${name}: {q} lists {variables[name]!r}", str(res if not ok else values))

        targets = list(panel_targets(dashboard.get("panels", [])))
        check(bool(targets), f"the dashboard has PromQL targets ({len(targets)})")
        for title, ref, expr in targets:
            what = f"dashboard: {title} [{ref}]"
            try:
                concrete = substitute(expr, variables)
            except KeyError as e:
                check(False, what, f"unknown variable {e} in {expr}")
                continue
            ok, res = prom.query(concrete)
            if not ok:
                check(False, f"{what}: the query parses", f"{res}; query: {concrete}")
            elif res:
                check(True, f"{what}: {describe(res)}")
            elif a.allow_missing_new and NEW_METRICS.search(expr):
                missing.append(f"{title} [{ref}]")
                print(f"MISSING (allowed by --allow-missing-new): {what}: no series for "
                      f"{', '.join(sorted(set(NEW_METRICS.findall(expr))))}; query: {concrete}", flush=True)
            else:
                check(False, f"{what}: returns data", f"no series; query: {concrete}")

        # The load shows in the metrics (whole run, independent of the panels).
        sel = f'job="{JOB}"'
        expect = [
            (f"sum(kuiperbelt_connections{{{sel}}})", lambda v: v == CLIENTS, f"== {CLIENTS}", "connections open"),
            (f'sum(increase(kuiperbelt_connections_refused_total{{{sel}, reason="callback_forbidden"}}[5m]))',
             lambda v: v > 0, "> 0", "the refused connect counted as callback_forbidden"),
            (f"sum(increase(kuiperbelt_messages_pushed_total{{{sel}}}[5m]))", lambda v: v > 0, "> 0", "pushes"),
            (f'sum(increase(kuiperbelt_message_errors_total{{{sel}, reason="not_found"}}[5m]))',
             lambda v: v > 0, "> 0", "the push to an unknown id counted as not_found"),
            (f"sum(increase(kuiperbelt_client_messages_total{{{sel}}}[5m]))", lambda v: v > 0, "> 0", "client messages"),
            (f'sum(increase(kuiperbelt_callback_requests_total{{{sel}, callback="receive", class="2xx"}}[5m]))',
             lambda v: v > 0, "> 0", "receive callbacks answered 2xx"),
        ]
        for expr, ok_value, want, what in expect:
            ok, res = prom.query(expr)
            value = float(res[0]["value"][1]) if ok and res else None
            check(value is not None and ok_value(value), f"the load is visible: {what} ({expr} {want})",
                  f"got {value if ok else res}")

        # The alert rules: each expression parses; Prometheus loaded and
        # evaluated every rule without error.
        for r in rules:
            name = r.get("alert") or r.get("record")
            ok, res = prom.query(r["expr"])
            check(ok, f"rule {name}: the expression parses and evaluates ({len(res) if ok else 0} series now)",
                  f"{res}; query: {r['expr']}")
        if rules:
            def evaluated():
                got = [x for g in prom.get("/api/v1/rules")["data"]["groups"] for x in g["rules"]]
                done = all(not x.get("lastEvaluation", "0001").startswith("0001") for x in got)
                return len(got) == len(rules) and done, got
            wait_for("Prometheus evaluated every rule", lambda: evaluated()[0], 15)
            got = evaluated()[1]
            check(sorted(x["name"] for x in got) == sorted(r.get("alert") or r.get("record") for r in rules),
                  f"Prometheus loaded the {len(rules)} rules of {', '.join(a.rules)}", str([x["name"] for x in got]))
            bad = [f"{x['name']}: {x.get('health')} {x.get('lastError', '')}" for x in got if x.get("health") != "ok"]
            check(not bad, "every rule evaluates in Prometheus with health ok", "; ".join(bad))

        if missing:
            print(f"MISSING: {len(missing)} expression(s) without data, allowed by --allow-missing-new: "
                  f"{'; '.join(missing)}", flush=True)
    except Abort:
        pass
    finally:
        if stop_clients is not None:
            stop_clients.set()
            for c in clients:
                c.join(5)
        for proc, name, log in reversed(procs):
            stop_process(proc, name)
            if failures and os.path.exists(log):
                with open(log) as f:
                    tail = f.read()[-3000:]
                if tail.strip():
                    print(f"--- {name} log (tail):\n{tail}", flush=True)
        if server is not None:
            server.shutdown()
            server.server_close()
        shutil.rmtree(work, ignore_errors=True)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    print(f"dashboard_queries: {'FAIL' if failures else 'PASS'} ({len(failures)} failed, "
          f"{len(missing)} missing allowed)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
