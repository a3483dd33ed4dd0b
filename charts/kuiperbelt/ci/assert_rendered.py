#!/usr/bin/env python3
"""Assertions on `helm template` output of the kuiperbelt chart.

usage: assert_rendered.py --mode MODE --binary KUIPERBELT [--label NAME] [--cluster on|off] RENDERED.yaml

Checks the properties the chart promises (see README.md): the sidecar's shape
per mode, the public Service exposing only the WebSocket port, the push API on
localhost in the sidecar modes, health probes, the restrictive securityContext,
enableServiceLinks: false, the drain preStop hook and a grace period longer
than the drain, the config checksum, the monitors, the API token (a Secret
volume mounted read-only without subPath, named by config api.token_file, never
KUIPERBELT_API__TOKEN; none of it without a token), and that the rendered
config, with the container's KUIPERBELT_* environment, passes
`kuiperbelt --check-config` (with api.token_file pointed at a stand-in token
file, since kuiperbelt reads it at start). With them on: the Grafana dashboard
ConfigMap (the sidecar's label, the chart's dashboards/kuiperbelt.json
unchanged, variables on kuiperbelt_build_info, every target on the
${datasource} variable) and the PrometheusRule (the monitoring.coreos.com/v1
fields it uses, known alerts with summary, description, severity and a
runbook_url whose anchor is a heading of the chart README). Cluster mode
(NATS), when the render shows any sign of it: config cluster.nats.url and
cluster.subject_prefix set, no NATS credentials in the ConfigMap, the
credentials only as KUIPERBELT_CLUSTER__NATS__* env vars from secretKeyRefs
(token, or user and password) or as a .creds file in a read-only Secret
volume that cluster.nats.credentials_file names, and in standalone mode a
non-headless API Service selecting the pods; without it none of that (no
`cluster` key, no KUIPERBELT_CLUSTER__* env, no such Service). --cluster
on/off says whether the values enabled it (the config must agree). Prints one
PASS/FAIL line per check; exits 1 on any failure.
"""

import argparse
import hashlib
import json
import os
import posixpath
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml

failures = []
label = ""

# Where the chart mounts the token Secret in the kuiperbelt container, and the
# file in it that config api.token_file names (see the chart's README, "Token").
TOKEN_DIR = "/var/run/kuiperbelt/api-token"
TOKEN_FILE = TOKEN_DIR + "/token"
TOKEN_VOLUME = "kuiperbelt-api-token"
STAND_IN_TOKEN = "from-a-secret"

# Cluster mode: where the chart mounts the NATS .creds Secret, the env vars
# that may carry NATS credentials (only from secretKeyRefs), and what a NATS
# subject prefix looks like.
NATS_CREDS_DIR = "/var/run/kuiperbelt/nats"
NATS_CREDS_VOLUME = "kuiperbelt-nats-creds"
NATS_TOKEN_ENV = "KUIPERBELT_CLUSTER__NATS__TOKEN"
NATS_USER_ENV = "KUIPERBELT_CLUSTER__NATS__USER"
NATS_PASSWORD_ENV = "KUIPERBELT_CLUSTER__NATS__PASSWORD"
NATS_SECRET_ENV = {NATS_TOKEN_ENV, NATS_USER_ENV, NATS_PASSWORD_ENV}
NATS_SUBJECT = re.compile(r"[^.*> \t\r\n]+(\.[^.*> \t\r\n]+)*")

CHART_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The alerts templates/prometheusrule.yaml renders, each with a runbook in the
# chart README under the heading "Alert: <name>".
ALERTS = {"KuiperbeltCallbackErrorsHigh", "KuiperbeltAppUnreachable", "KuiperbeltPushErrorsHigh",
          "KuiperbeltDrainOverrunning", "KuiperbeltFileDescriptorsNearLimit", "KuiperbeltCallbacksDropped"}
DASHBOARD_LABEL = ("grafana_dashboard", "1")


def check(ok, what, detail=""):
    print(f"{'PASS' if ok else 'FAIL'}: {label}: {what}" + (f" ({detail})" if detail and not ok else ""))
    if not ok:
        failures.append(what)
    return ok


def go_seconds(d):
    """A Go duration string in seconds."""
    d = str(d).strip()
    if d == "0":
        return 0.0
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"([0-9]*\.?[0-9]+)(ns|us|µs|ms|s|m|h)", d)
    if not parts or "".join(n + u for n, u in parts) != d:
        raise ValueError(f"not a Go duration: {d!r}")
    return sum(float(n) * units[u] for n, u in parts)


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def host_of(addr):
    return addr.rsplit(":", 1)[0]


# The subset of the Prometheus Operator CRDs (monitoring.coreos.com/v1) the
# chart uses, strict: a misspelt field fails here as the API server would.
ENDPOINT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["port"],
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string"},
        "interval": {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
        "scrapeTimeout": {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"},
    },
}
SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string"}, "labels": {"type": "object", "additionalProperties": {"type": "string"}}},
}


PROM_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
# The subset of monitoring.coreos.com/v1 PrometheusRule the chart uses, strict.
PROMETHEUS_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                           "labels": STRING_MAP, "annotations": STRING_MAP},
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["groups"],
            "properties": {"groups": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "rules"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "interval": PROM_DURATION,
                    "rules": {"type": "array", "minItems": 1, "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["alert", "expr"],
                        "properties": {
                            "alert": {"type": "string", "minLength": 1},
                            "expr": {"type": "string", "minLength": 1},
                            "for": PROM_DURATION,
                            "labels": STRING_MAP,
                            "annotations": STRING_MAP,
                        },
                    }},
                },
            }}},
        },
    },
}


def github_anchors(markdown):
    """The anchors GitHub gives the headings of a Markdown text."""
    anchors = set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", markdown, re.M):
        text = re.sub(r"`", "", m.group(1)).strip().lower()
        anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def dashboard_targets(panels):
    for p in panels:
        yield p, p.get("targets") or []
        yield from dashboard_targets(p.get("panels") or [])


def check_dashboard(cm):
    """The Grafana dashboard ConfigMap."""
    name = cm["metadata"]["name"]
    labels = cm["metadata"].get("labels", {})
    check(labels.get(DASHBOARD_LABEL[0]) == DASHBOARD_LABEL[1],
          f"dashboard ConfigMap {name} carries the Grafana sidecar's label {DASHBOARD_LABEL[0]}: \"{DASHBOARD_LABEL[1]}\"",
          str(labels))
    data = cm.get("data", {})
    if not check(list(data) == ["kuiperbelt.json"], f"dashboard ConfigMap {name} holds kuiperbelt.json", str(list(data))):
        return
    with open(os.path.join(CHART_DIR, "dashboards", "kuiperbelt.json")) as f:
        source = f.read()
    check(data["kuiperbelt.json"] == source.rstrip("\n"), "the dashboard is the chart's dashboards/kuiperbelt.json, unchanged")
    try:
        d = json.loads(data["kuiperbelt.json"])
    except ValueError as e:
        check(False, "the dashboard is JSON", str(e))
        return
    check(bool(d.get("uid")) and bool(d.get("title")), "the dashboard has a uid and a title")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    check(variables.get("datasource", {}).get("type") == "datasource"
          and variables["datasource"].get("query") == "prometheus", "dashboard variable $datasource picks a Prometheus")
    for var in ("namespace", "job", "pod"):
        q = variables.get(var, {}).get("query")
        q = q.get("query") if isinstance(q, dict) else q
        check(bool(re.fullmatch(r"label_values\(kuiperbelt_build_info(\{[^}]*\})?,\s*" + var + r"\)", q or "")),
              f"dashboard variable ${var} is label_values(kuiperbelt_build_info..., {var})", repr(q))
    ids, exprs, bad = [], 0, []
    for panel, targets in dashboard_targets(d.get("panels", [])):
        ids.append(panel.get("id"))
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            bad.append(f"{panel.get('title')}: panel datasource {panel.get('datasource')}")
        if not targets:
            bad.append(f"{panel.get('title')}: no target")
        for t in targets:
            exprs += 1
            if t.get("datasource", {}).get("uid") != "${datasource}" or not t.get("expr"):
                bad.append(f"{panel.get('title')} [{t.get('refId')}]")
            elif not all(all(m in sel for m in ('namespace=~"$namespace"', 'job=~"$job"', 'pod=~"$pod"'))
                         for sel in re.findall(r"\{[^}]*\}", t["expr"]) or [""]):
                bad.append(f"{panel.get('title')} [{t.get('refId')}]: a selector not filtered by $namespace, $job, $pod")
    check(len(ids) == len(set(ids)) and None not in ids, "the dashboard's panel ids are unique")
    check(exprs > 0 and not bad, f"each of the dashboard's {exprs} targets queries ${{datasource}}, filtered by the variables",
          "; ".join(bad))


def check_prometheus_rule(rule):
    name = rule["metadata"]["name"]
    try:
        jsonschema.validate(rule, PROMETHEUS_RULE)
        check(True, f"PrometheusRule {name} matches the monitoring.coreos.com/v1 fields it uses")
    except jsonschema.ValidationError as e:
        check(False, f"PrometheusRule {name} matches the monitoring.coreos.com/v1 fields it uses",
              f"{e.message} at {'/'.join(map(str, e.absolute_path))}")
        return
    with open(os.path.join(CHART_DIR, "README.md")) as f:
        anchors = github_anchors(f.read())
    missing = sorted(a for a in ALERTS if f"alert-{a.lower()}" not in anchors)
    check(not missing, "the chart README has a runbook heading (\"Alert: <name>\") for every alert", str(missing))
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    names = [r["alert"] for r in rules]
    check(len(names) == len(set(names)) and set(names) <= ALERTS, f"PrometheusRule {name}: known alerts, once each",
          str(names))
    for r in rules:
        ann, lab = r.get("annotations", {}), r.get("labels", {})
        check(bool(ann.get("summary")) and bool(ann.get("description")) and bool(lab.get("severity")),
              f"alert {r['alert']}: summary, description and a severity label")
        url = ann.get("runbook_url", "")
        base, _, anchor = url.partition("#")
        check(re.match(r"^https?://", base) is not None and anchor == f"alert-{r['alert'].lower()}" and anchor in anchors,
              f"alert {r['alert']}: runbook_url points at its README section (#alert-{r['alert'].lower()})", repr(url))


def monitor_schema(kind, endpoints_key):
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["selector", endpoints_key],
                "properties": {
                    "selector": SELECTOR,
                    endpoints_key: {"type": "array", "minItems": 1, "items": ENDPOINT},
                },
            },
        },
    }


def container_env(container):
    """The KUIPERBELT_* environment the container would see, for --check-config."""
    env, values = {}, {}
    for e in container.get("env", []):
        if "value" in e:
            v = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: values.get(m.group(1), m.group(0)), str(e["value"]))
        else:
            v = {"POD_IP": "10.1.2.3"}.get(e["name"], "from-a-secret")
        values[e["name"]] = v
        if e["name"].startswith("KUIPERBELT_"):
            env[e["name"]] = v
    return env


def with_stand_in_token_file(config_text, token_path):
    """The config with api.token_file (if set) pointing at token_path instead.

    Only that one line changes; the result must parse to the same config but
    for api.token_file, or this raises.
    """
    config = yaml.safe_load(config_text) or {}
    token_file = (config.get("api") or {}).get("token_file")
    if token_file is None:
        return config_text
    line = re.compile(r"^(\s+token_file:[ \t]+)(['\"]?)" + re.escape(str(token_file)) + r"\2[ \t]*$", re.M)
    text, n = line.subn(lambda m: m.group(1) + token_path, config_text)
    want = dict(config, api=dict(config["api"], token_file=token_path))
    if n != 1 or yaml.safe_load(text) != want:
        raise ValueError(f"cannot point api.token_file ({token_file!r}) at a stand-in file in:\n{config_text}")
    return text


def check_config(binary, config_text, env_extra):
    with tempfile.TemporaryDirectory() as d:
        # kuiperbelt reads api.token_file at start: give it a token file (as
        # the Secret volume would) at a path that exists here.
        token_path = os.path.join(d, "api-token", "token")
        os.makedirs(os.path.dirname(token_path))
        with open(token_path, "w") as f:
            f.write(STAND_IN_TOKEN + "\n")
        config_text = with_stand_in_token_file(config_text, token_path)
        path = os.path.join(d, "config.yml")
        with open(path, "w") as f:
            f.write(config_text)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env_extra}
        return subprocess.run([binary, "--config", path, "--check-config"], cwd=d, env=env,
                              capture_output=True, text=True)


def main():
    global label
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", required=True, choices=["nativeSidecar", "sidecar", "standalone", "embedded"])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--label", default="")
    ap.add_argument("--embedded-parent", action="store_true",
                    help="the output of a parent chart embedding kuiperbelt with the named templates")
    ap.add_argument("--cluster", choices=["on", "off"],
                    help="whether the values enable cluster mode (cluster.enabled); default: as the render shows")
    ap.add_argument("rendered")
    a = ap.parse_args()
    label = a.label or os.path.basename(a.rendered)

    with open(a.rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)

    # The config (the dashboard ConfigMap, holding JSON, is checked below).
    dashboards = [c for c in kinds.get("ConfigMap", []) if any(k.endswith(".json") for k in c.get("data") or {})]
    cms = [c for c in kinds.get("ConfigMap", []) if c not in dashboards]
    if not check(len(cms) == 1 and list(cms[0]["data"]) == ["config.yml"], "one ConfigMap holding config.yml"):
        return 1
    cm = cms[0]
    text = cm["data"]["config.yml"]
    config = yaml.safe_load(text)
    api_addr = config["api"]["listen"]
    api_port = port_of(api_addr)
    ws_port = config["port"]
    want_host = "0.0.0.0" if a.mode == "standalone" else "127.0.0.1"
    check(host_of(api_addr) == want_host, f"api.listen binds {want_host}", api_addr)
    drain_timeout = go_seconds(config["drain"]["timeout"])
    check(drain_timeout >= go_seconds(config["drain"]["announce_delay"]) + go_seconds(config["drain"]["spread"]),
          "drain.timeout >= announce_delay + spread")
    api_cfg = config["api"]
    token_file = api_cfg.get("token_file")
    check("token" not in api_cfg, "the ConfigMap holds no api.token (the token stays in its Secret)")
    if token_file is not None:
        check(token_file == TOKEN_FILE, f"api.token_file is {TOKEN_FILE} (in the token Secret's mount)", repr(token_file))
    r = check_config(a.binary, text, {})
    check(r.returncode == 0 and "config OK" in r.stdout, "kuiperbelt --check-config accepts the ConfigMap's config",
          (r.stdout + r.stderr).strip())
    if a.mode == "standalone":
        check(not re.match(r"^http://(localhost|127\.|\[::1\])", config["callback"]["connect"]),
              "standalone: callback.connect is not the pod itself")

    # Cluster mode: the ConfigMap holds the non-secret keys only.
    cluster = (config.get("cluster") or {}) if "cluster" in config else None
    nats = {}
    if a.cluster == "on":
        check(cluster is not None, "cluster mode (cluster.enabled): the config has a cluster section")
    elif a.cluster == "off":
        check(cluster is None, "no cluster mode: the config has no cluster key", str(config.get("cluster")))
    if cluster is not None:
        nats = cluster.get("nats") or {}
        urls = [u.strip() for u in str(nats.get("url") or "").split(",") if u.strip()]
        check(bool(urls) and all(re.fullmatch(r"(nats|tls|ws|wss)://[^\s/,]+", u) for u in urls),
              "cluster: config cluster.nats.url names the NATS server(s)", repr(nats.get("url")))
        prefix = str(cluster.get("subject_prefix") or "")
        check(NATS_SUBJECT.fullmatch(prefix) is not None,
              "cluster: config cluster.subject_prefix is set (the release's own NATS subject prefix)", repr(prefix))
        check(not {"token", "user", "password"} & set(nats),
              "cluster: the ConfigMap holds no NATS credentials (no cluster.nats.token, user, password)",
              str(sorted(nats)))
        if "request_timeout" in cluster:
            check(go_seconds(cluster["request_timeout"]) > 0, "cluster: cluster.request_timeout > 0")

    # The pods that run kuiperbelt.
    pods = []
    for d in kinds.get("Deployment", []):
        spec = d["spec"]["template"]["spec"]
        in_init = [c for c in spec.get("initContainers", []) if c["name"] == "kuiperbelt"]
        in_main = [c for c in spec.get("containers", []) if c["name"] == "kuiperbelt"]
        if in_init or in_main:
            pods.append((d, spec, in_init, in_main))
    expect_pod = a.mode != "embedded" or a.embedded_parent
    check(len(pods) == (1 if expect_pod else 0), f"{'one Deployment' if expect_pod else 'no Deployment'} runs kuiperbelt")

    secrets = {s["metadata"]["name"]: s for s in kinds.get("Secret", [])}
    for dep, spec, in_init, in_main in pods:
        meta = dep["spec"]["template"]["metadata"]
        pod_labels = meta.get("labels", {})
        check(matches(dep["spec"]["selector"]["matchLabels"], pod_labels), "Deployment selector matches its pods")
        check(spec.get("enableServiceLinks") is False,
              "enableServiceLinks: false (service links would inject KUIPERBELT_PORT=tcp://...)")
        checksum = meta.get("annotations", {}).get("checksum/kuiperbelt-config")
        check(checksum == hashlib.sha256(text.rstrip("\n").encode()).hexdigest(),
              "pod annotation checksum/kuiperbelt-config is the sha256 of the ConfigMap's config")
        grace = spec.get("terminationGracePeriodSeconds")
        check(isinstance(grace, int) and grace > drain_timeout,
              f"terminationGracePeriodSeconds ({grace}) exceeds drain.timeout ({drain_timeout:g}s)")

        if a.mode in ("nativeSidecar",) or (a.mode == "embedded" and in_init):
            check(len(in_init) == 1 and not in_main, "native sidecar: kuiperbelt is an init container, not a container")
            check(spec["initContainers"][0]["name"] == "kuiperbelt", "native sidecar: kuiperbelt is the first init container")
            kb = in_init[0]
            check(kb.get("restartPolicy") == "Always", "native sidecar: restartPolicy: Always")
            check(kb.get("startupProbe", {}).get("httpGet", {}).get("path") == "/healthz",
                  "native sidecar: startupProbe on /healthz (the app starts after it passes)")
        else:
            check(len(in_main) == 1 and not in_init, "kuiperbelt is a regular container")
            kb = in_main[0]
            check("restartPolicy" not in kb, "regular container: no restartPolicy")
        apps = [c for c in spec["containers"] if c["name"] != "kuiperbelt"]
        if a.mode == "standalone":
            check(not apps, "standalone: kuiperbelt is the only container")
        else:
            check(len(apps) == 1, "the app container is in the pod")

        # The kuiperbelt container.
        check("-config=/etc/kuiperbelt/config.yml" in kb.get("args", []), "kuiperbelt reads /etc/kuiperbelt/config.yml")
        mounts = [m for m in kb.get("volumeMounts", []) if m["mountPath"] == "/etc/kuiperbelt"]
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        check(len(mounts) == 1 and mounts[0].get("readOnly") is True
              and vols.get(mounts[0]["name"], {}).get("configMap", {}).get("name") == cm["metadata"]["name"],
              "the ConfigMap is mounted read-only at /etc/kuiperbelt")
        sc = kb.get("securityContext", {})
        check(sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0, "securityContext: non-root user")
        check(sc.get("readOnlyRootFilesystem") is True, "securityContext: read-only root filesystem")
        check(sc.get("allowPrivilegeEscalation") is False, "securityContext: no privilege escalation")
        check("ALL" in sc.get("capabilities", {}).get("drop", []) and not sc.get("capabilities", {}).get("add"),
              "securityContext: all capabilities dropped")
        ports = {p["name"]: p["containerPort"] for p in kb.get("ports", [])}
        check(ports.get("websocket") == ws_port, f"container port websocket = config port {ws_port}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = kb.get(probe, {}).get("httpGet", {})
            check(get.get("path") == path and get.get("port") in ("websocket", ws_port),
                  f"{probe} on {path} (public port)")
        if "metrics" in config:
            check(ports.get("metrics") == port_of(config["metrics"]["listen"]), "container port metrics = metrics.listen")
        if a.mode == "standalone":
            check(ports.get("api") == api_port, "standalone: container port api = api.listen")
        else:
            check("api" not in ports and api_port not in ports.values(), "the localhost API port is not a container port")
        env = container_env(kb)
        r = check_config(a.binary, text, env)
        check(r.returncode == 0, f"--check-config with the container's environment ({', '.join(sorted(env)) or 'none'})",
              (r.stdout + r.stderr).strip())
        kb_env = {e["name"]: e for e in kb.get("env", [])}

        # The API token: with one, the Secret is a read-only volume mounted
        # without subPath (kubelet never updates subPath mounts, and kuiperbelt
        # re-reads the file on rotation) and api.token_file names the file in
        # it; kuiperbelt gets no token by env (api.token and api.token_file
        # together are a config error). Without one, none of it.
        app_token_refs = [{e["name"]: e for e in app.get("env", [])}.get("KUIPERBELT_API_TOKEN") for app in apps]
        prestops = [" ".join(app.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", []))
                    for app in apps]
        has_token = (token_file is not None or any(app_token_refs) or "KUIPERBELT_API__TOKEN" in kb_env
                     or any("Authorization: Bearer" in c for c in prestops)
                     or any(n.endswith("-api-token") for n in secrets))
        nats_mounts = [m for m in kb.get("volumeMounts", [])
                       if m.get("mountPath", "").rstrip("/") == NATS_CREDS_DIR or m.get("name") == NATS_CREDS_VOLUME]
        token_mounts = [m for m in kb.get("volumeMounts", [])
                        if m not in nats_mounts and (
                            m.get("mountPath", "").rstrip("/") == TOKEN_DIR or m.get("name") == TOKEN_VOLUME
                            or "secret" in vols.get(m.get("name"), {}))]
        token_ref = None
        if has_token:
            check(token_file == TOKEN_FILE, f"token: config api.token_file is {TOKEN_FILE}", repr(token_file))
            check(not {"KUIPERBELT_API__TOKEN", "KUIPERBELT_API__TOKEN_FILE"} & set(kb_env),
                  "token: the kuiperbelt container gets no KUIPERBELT_API__TOKEN(_FILE) env (the file is its source)",
                  str(sorted(kb_env)))
            mount = token_mounts[0] if len(token_mounts) == 1 else {}
            check(mount.get("mountPath") == TOKEN_DIR and mount.get("readOnly") is True
                  and "subPath" not in mount and "subPathExpr" not in mount,
                  f"token: the kuiperbelt container mounts one Secret volume at {TOKEN_DIR}, read-only, without subPath",
                  str(token_mounts))
            secret = vols.get(mount.get("name"), {}).get("secret") or {}
            rel = posixpath.relpath(token_file, TOKEN_DIR) if str(token_file).startswith(TOKEN_DIR + "/") else None
            items = [i for i in secret.get("items") or [] if i.get("path") == rel]
            if check(bool(secret.get("secretName")) and len(items) == 1,
                     "token: api.token_file is a key of the mounted Secret volume (items path)",
                     f"api.token_file {token_file!r}, volume {vols.get(mount.get('name'))}"):
                token_ref = {"name": secret["secretName"], "key": items[0]["key"]}
                if token_ref["name"] in secrets:
                    check(token_ref["key"] in secrets[token_ref["name"]].get("data", {}),
                          "token: the Secret holds the mounted key")
        else:
            check(not token_mounts and TOKEN_VOLUME not in vols,
                  f"no token: no token Secret volume, nothing mounted at {TOKEN_DIR}, no api.token_file",
                  str(token_mounts))
        # Cluster mode: NATS credentials reach kuiperbelt only from Secrets,
        # as env vars by secretKeyRef (token, or user and password) or as a
        # .creds file in a read-only Secret volume; one kind.
        cluster_env = {n: e for n, e in kb_env.items() if n.startswith("KUIPERBELT_CLUSTER__")}
        if cluster is not None:
            for n, e in sorted(cluster_env.items()):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef") or {}
                check(n in NATS_SECRET_ENV and "value" not in e and list(e.get("valueFrom") or {}) == ["secretKeyRef"]
                      and bool(ref.get("name")) and bool(ref.get("key")),
                      f"cluster: {n} comes from a Secret (secretKeyRef), never a literal value or another source",
                      str(e))
            creds_env = set(cluster_env) & NATS_SECRET_ENV
            creds_file = nats.get("credentials_file")
            check(creds_env in (set(), {NATS_TOKEN_ENV}, {NATS_USER_ENV, NATS_PASSWORD_ENV})
                  and not (creds_env and creds_file),
                  "cluster: one kind of NATS credentials (a token, a user and password, or a .creds file)",
                  f"env {sorted(creds_env)}, credentials_file {creds_file!r}")
            if creds_file is not None or nats_mounts:
                mount = nats_mounts[0] if len(nats_mounts) == 1 else {}
                check(mount.get("mountPath") == NATS_CREDS_DIR and mount.get("readOnly") is True
                      and "subPath" not in mount and "subPathExpr" not in mount,
                      f"cluster: the .creds Secret is mounted once at {NATS_CREDS_DIR}, read-only, without subPath",
                      str(nats_mounts))
                secret = vols.get(mount.get("name"), {}).get("secret") or {}
                rel = (posixpath.relpath(creds_file, NATS_CREDS_DIR)
                       if str(creds_file).startswith(NATS_CREDS_DIR + "/") else None)
                check(bool(secret.get("secretName")) and len([i for i in secret.get("items") or []
                                                              if i.get("path") == rel and i.get("key")]) == 1,
                      "cluster: cluster.nats.credentials_file is a key of the mounted Secret volume (items path)",
                      f"credentials_file {creds_file!r}, volume {vols.get(mount.get('name'))}")
        else:
            check(not cluster_env and not nats_mounts and NATS_CREDS_VOLUME not in vols,
                  "no cluster: no KUIPERBELT_CLUSTER__* env, no NATS .creds volume",
                  f"{sorted(cluster_env)} {nats_mounts}")
        if a.mode == "standalone":
            check(kb_env.get("KUIPERBELT_ENDPOINT", {}).get("value") == f"$(POD_IP):{api_port}"
                  or "endpoint" in config, "standalone: X-Kuiperbelt-Endpoint is the pod IP and API port")
            names = [e["name"] for e in kb.get("env", [])]
            if "KUIPERBELT_ENDPOINT" in names:
                check("POD_IP" in names[: names.index("KUIPERBELT_ENDPOINT")], "POD_IP is defined before KUIPERBELT_ENDPOINT")

        # The app container: drain on stop, push API address and token.
        for app in apps:
            cmd = " ".join(app.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", []))
            check(f"http://127.0.0.1:{api_port}/drain" in cmd and "POST" in cmd,
                  "app preStop POSTs /drain on the localhost API port")
            check(grace >= drain_timeout + 1, "grace period leaves time after the drain deadline")
            app_env = {e["name"]: e for e in app.get("env", [])}
            if "KUIPERBELT_API_URL" in app_env:
                check(app_env["KUIPERBELT_API_URL"].get("value") == f"http://127.0.0.1:{api_port}",
                      "app env KUIPERBELT_API_URL points at the API listener")
            if has_token:
                check(token_ref is not None
                      and app_env.get("KUIPERBELT_API_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef") == token_ref,
                      "the app gets the same token (KUIPERBELT_API_TOKEN from the mounted Secret key)",
                      f"{app_env.get('KUIPERBELT_API_TOKEN')} vs {token_ref}")
                check("Authorization: Bearer ${KUIPERBELT_API_TOKEN}" in cmd, "the preStop call sends the token")

        # Selectors of the Services, PDB and monitors reach these pods.
        for pdb in kinds.get("PodDisruptionBudget", []):
            check(matches(pdb["spec"]["selector"]["matchLabels"], pod_labels), "PodDisruptionBudget selects the pods")

        for pm in kinds.get("PodMonitor", []):
            check(matches(pm["spec"]["selector"]["matchLabels"], pod_labels), "PodMonitor selects the pods")
            check(all(e["port"] == "metrics" and ports.get("metrics") for e in pm["spec"]["podMetricsEndpoints"]),
                  "PodMonitor scrapes the container's metrics port (not the localhost API)")

    # Services.
    services = kinds.get("Service", [])
    public = [s for s in services if s["metadata"]["name"] == cm["metadata"]["name"]]
    check(len(public) == 1, "one public Service")
    for s in public:
        sp = s["spec"]["ports"]
        check(len(sp) == 1 and sp[0]["targetPort"] == "websocket" and sp[0]["name"] == "websocket",
              "public Service exposes only the WebSocket port", str(sp))
    api_services = []
    for s in services:
        names = [p["name"] for p in s["spec"]["ports"]]
        targets = [p.get("targetPort") for p in s["spec"]["ports"]]
        if "api" in names or "api" in targets or api_port in targets:
            api_services.append(s)
            check(a.mode == "standalone" and names == ["api"]
                  and (s["spec"].get("clusterIP") == "None" or cluster is not None),
                  f"Service {s['metadata']['name']}: the API only on the standalone API Services "
                  "(headless; in cluster mode also one regular Service)")
    # A regular (non-headless) API Service load-balances over the pods: right
    # only in cluster mode, where any pod reaches every session.
    regular_api = [s for s in api_services if s["spec"].get("clusterIP") != "None"]
    if a.mode == "standalone" and cluster is not None:
        pod_label_sets = [dep["spec"]["template"]["metadata"]["labels"] for dep, _, _, _ in pods]
        good = [s for s in regular_api
                if s["spec"].get("type", "ClusterIP") == "ClusterIP" and not s["spec"].get("publishNotReadyAddresses")
                and [(p["name"], p.get("port"), p.get("targetPort")) for p in s["spec"]["ports"]] == [("api", api_port, "api")]
                and pod_label_sets and all(matches(s["spec"].get("selector"), pl) for pl in pod_label_sets)]
        check(len(regular_api) == 1 and len(good) == 1,
              "standalone cluster mode: one non-headless ClusterIP API Service (port api, ready pods only) selects the pods",
              str([(s["metadata"]["name"], s["spec"]) for s in regular_api]))
    else:
        check(not regular_api, "no non-headless API Service (outside standalone cluster mode a push must reach its pod)",
              str([s["metadata"]["name"] for s in regular_api]))
    for dep, _, _, _ in pods:
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        for s in services:
            check(matches(s["spec"]["selector"], pod_labels), f"Service {s['metadata']['name']} selects the pods")

    # Monitors (CRDs: kubernetes-validate has no schema for them).
    for kind, key in (("PodMonitor", "podMetricsEndpoints"), ("ServiceMonitor", "endpoints")):
        for m in kinds.get(kind, []):
            try:
                jsonschema.validate(m, monitor_schema(kind, key))
                check(True, f"{kind} matches the monitoring.coreos.com/v1 fields it uses")
            except jsonschema.ValidationError as e:
                check(False, f"{kind} matches the monitoring.coreos.com/v1 fields it uses", e.message)
    for sm in kinds.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"]["matchLabels"]
        hit = [s for s in services if matches(sel, s["metadata"].get("labels", {}))]
        check(len(hit) == 1 and [p["name"] for p in hit[0]["spec"]["ports"]] == ["metrics"],
              "ServiceMonitor selects only the metrics Service", str([s["metadata"]["name"] for s in hit]))
    # The Grafana dashboard and the alerts (CRD: no schema in kubernetes-validate).
    for d in dashboards:
        check_dashboard(d)
    for r in kinds.get("PrometheusRule", []):
        check_prometheus_rule(r)
    print(f"{label}: {'FAIL' if failures else 'PASS'} ({len(failures)} failed)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
