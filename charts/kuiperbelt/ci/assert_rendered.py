#!/usr/bin/env python3
"""Assertions on `helm template` output of the kuiperbelt chart.

usage: assert_rendered.py --mode MODE --binary KUIPERBELT [--label NAME] RENDERED.yaml

Checks the properties the chart promises (see README.md): the sidecar's shape
per mode, the public Service exposing only the WebSocket port, the push API on
localhost in the sidecar modes, health probes, the restrictive securityContext,
enableServiceLinks: false, the drain preStop hook and a grace period longer
than the drain, the config checksum, the monitors, and that the rendered
config, with the container's KUIPERBELT_* environment, passes
`kuiperbelt --check-config`. Prints one PASS/FAIL line per check; exits 1 on
any failure.
"""

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile

import jsonschema
import yaml

failures = []
label = ""


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


def check_config(binary, config_text, env_extra):
    with tempfile.TemporaryDirectory() as d:
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
    ap.add_argument("rendered")
    a = ap.parse_args()
    label = a.label or os.path.basename(a.rendered)

    with open(a.rendered) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)

    # The config.
    cms = kinds.get("ConfigMap", [])
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
    r = check_config(a.binary, text, {})
    check(r.returncode == 0 and "config OK" in r.stdout, "kuiperbelt --check-config accepts the ConfigMap's config",
          (r.stdout + r.stderr).strip())
    if a.mode == "standalone":
        check(not re.match(r"^http://(localhost|127\.|\[::1\])", config["callback"]["connect"]),
              "standalone: callback.connect is not the pod itself")

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
        token_ref = kb_env.get("KUIPERBELT_API__TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
        if token_ref and token_ref["name"] in secrets:
            check(token_ref["key"] in secrets[token_ref["name"]].get("data", {}), "the token Secret holds the referenced key")
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
            if token_ref:
                check(app_env.get("KUIPERBELT_API_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef") == token_ref,
                      "the app gets the same token (KUIPERBELT_API_TOKEN)")
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
    for s in services:
        names = [p["name"] for p in s["spec"]["ports"]]
        targets = [p.get("targetPort") for p in s["spec"]["ports"]]
        if "api" in names or "api" in targets or api_port in targets:
            check(a.mode == "standalone" and s["spec"].get("clusterIP") == "None" and names == ["api"],
                  f"Service {s['metadata']['name']}: the API only on the standalone headless API Service")
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
    print(f"{label}: {'FAIL' if failures else 'PASS'} ({len(failures)} failed)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
