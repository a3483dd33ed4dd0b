{{/*
Named templates. Those marked PUBLIC are meant for users' own charts too (see
README.md, "Embedding"): call them with this chart's context, which a parent
chart reaches as `.Subcharts.kuiperbelt`.
*/}}

{{- define "kuiperbelt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "kuiperbelt.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name with a suffix, kept within 63 characters. */}}
{{- define "kuiperbelt.suffixed" -}}
{{- $ctx := index . 0 -}}
{{- $suffix := index . 1 -}}
{{- printf "%s-%s" (include "kuiperbelt.fullname" $ctx | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix -}}
{{- end -}}

{{/* PUBLIC: labels the chart's selectors match; put them on your pods when embedding. */}}
{{- define "kuiperbelt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kuiperbelt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kuiperbelt.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kuiperbelt.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode | kebabcase }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "kuiperbelt.image" -}}
{{- $img := .Values.image -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "kuiperbelt.appImage" -}}
{{- $img := .Values.app.image -}}
{{- if not $img.repository -}}
{{- fail (printf "mode %s renders your app's Deployment: set app.image.repository (or use mode standalone or embedded)" .Values.mode) -}}
{{- end -}}
{{- if $img.digest -}}
{{- printf "%s@%s" $img.repository $img.digest -}}
{{- else -}}
{{- printf "%s:%s" $img.repository (toString $img.tag) -}}
{{- end -}}
{{- end -}}

{{- define "kuiperbelt.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "kuiperbelt.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
A Go duration (config value) in whole seconds, rounded up.
Argument: (list "key.for.messages" value).
*/}}
{{- define "kuiperbelt.seconds" -}}
{{- $key := index . 0 -}}
{{- $d := index . 1 | toString | trim -}}
{{- $units := dict "ns" 0.000000001 "us" 0.000001 "µs" 0.000001 "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 -}}
{{- if eq $d "0" -}}
0
{{- else if regexMatch "^([0-9]*[.]?[0-9]+(ns|us|µs|ms|s|m|h))+$" $d -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9]*[.]?[0-9]+(ns|us|µs|ms|s|m|h)" $d -1 -}}
{{- $num := regexFind "^[0-9]*[.]?[0-9]+" . -}}
{{- $total = addf $total (mulf (float64 $num) (get $units (trimPrefix $num .))) -}}
{{- end -}}
{{- ceil $total | int -}}
{{- else -}}
{{- fail (printf "config.%s: %q is not a Go duration like 30s or 1m30s" $key $d) -}}
{{- end -}}
{{- end -}}

{{- define "kuiperbelt.apiBindAddress" -}}
{{- if .Values.api.bindAddress -}}
{{- .Values.api.bindAddress -}}
{{- else if eq .Values.mode "standalone" -}}
0.0.0.0
{{- else -}}
127.0.0.1
{{- end -}}
{{- end -}}

{{/* The host the app uses for the push API in the sidecar modes. */}}
{{- define "kuiperbelt.apiLocalHost" -}}
{{- $bind := include "kuiperbelt.apiBindAddress" . -}}
{{- if or (eq $bind "0.0.0.0") (eq $bind "::") (eq $bind "") -}}127.0.0.1{{- else if contains ":" $bind -}}[{{ $bind }}]{{- else -}}{{ $bind }}{{- end -}}
{{- end -}}

{{- define "kuiperbelt.hasToken" -}}
{{- if or .Values.api.token.existingSecret .Values.api.token.value -}}true{{- end -}}
{{- end -}}

{{- define "kuiperbelt.tokenSecretName" -}}
{{- default (include "kuiperbelt.suffixed" (list . "api-token")) .Values.api.token.existingSecret -}}
{{- end -}}

{{/*
Where the token Secret is mounted in the kuiperbelt container (a directory: a
Secret volume without subPath, so kubelet updates the file when the Secret
changes) and the file in it that config api.token_file names.
*/}}
{{- define "kuiperbelt.tokenDir" -}}/var/run/kuiperbelt/api-token{{- end -}}
{{- define "kuiperbelt.tokenFile" -}}{{ include "kuiperbelt.tokenDir" . }}/token{{- end -}}

{{/*
Cluster mode (NATS). The kind of NATS credentials the values give, after
checking them: "token" or "userPassword" (env vars from secretKeyRefs on
cluster.nats.existingSecret), "creds" (the cluster.nats.credsSecret file) or
"" (none). kuiperbelt accepts one kind only.
*/}}
{{- define "kuiperbelt.natsAuth" -}}
{{- $n := .Values.cluster.nats -}}
{{- if and $n.existingSecret $n.credsSecret -}}
{{- fail "cluster.nats.existingSecret and cluster.nats.credsSecret are both set: kuiperbelt takes one kind of NATS credentials (a token, a user and password, or a .creds file)" -}}
{{- end -}}
{{- if $n.existingSecret -}}
{{- if and $n.tokenKey (or $n.userKey $n.passwordKey) -}}
{{- fail "cluster.nats.tokenKey and cluster.nats.userKey/passwordKey are both set: NATS takes a token or a user and password, not both" -}}
{{- else if or $n.userKey $n.passwordKey -}}
{{- if not (and $n.userKey $n.passwordKey) -}}
{{- fail "cluster.nats.userKey and cluster.nats.passwordKey go together: set both (keys of cluster.nats.existingSecret)" -}}
{{- end -}}
userPassword
{{- else -}}
token
{{- end -}}
{{- else if $n.credsSecret -}}
creds
{{- else if or $n.tokenKey $n.userKey $n.passwordKey -}}
{{- fail "cluster.nats.tokenKey/userKey/passwordKey are keys of cluster.nats.existingSecret: set it (the Secret holding the NATS credentials)" -}}
{{- end -}}
{{- end -}}

{{/* "true" when kuiperbelt gets a NATS .creds file (cluster.nats.credsSecret). */}}
{{- define "kuiperbelt.hasNatsCreds" -}}
{{- if and .Values.cluster.enabled (eq (include "kuiperbelt.natsAuth" .) "creds") -}}true{{- end -}}
{{- end -}}

{{/*
Where the .creds Secret is mounted (a directory, no subPath) and the file in
it that config cluster.nats.credentials_file names.
*/}}
{{- define "kuiperbelt.natsCredsDir" -}}/var/run/kuiperbelt/nats{{- end -}}
{{- define "kuiperbelt.natsCredsFile" -}}{{ include "kuiperbelt.natsCredsDir" . }}/nats.creds{{- end -}}

{{/*
The config's `cluster` section (cluster.enabled): the non-secret keys only.
Credentials reach kuiperbelt as env vars from the Secret or as a mounted file.
*/}}
{{- define "kuiperbelt.clusterConfig" -}}
{{- $c := .Values.cluster -}}
{{- $url := default "" $c.nats.url | toString | trim -}}
{{- if not (trimAll ", " $url) -}}
{{- fail "cluster.enabled=true needs cluster.nats.url: the NATS server(s) the kuiperbelt nodes share, nats://host:4222 or a comma-separated list (the chart does not install NATS)" -}}
{{- end -}}
{{- $nats := dict "url" $url -}}
{{- if eq (include "kuiperbelt.natsAuth" .) "creds" -}}
{{- $_ := set $nats "credentials_file" (include "kuiperbelt.natsCredsFile" .) -}}
{{- end -}}
{{- $prefix := default (include "kuiperbelt.fullname" .) $c.subjectPrefix | toString -}}
{{- if not (regexMatch "^[^.*> \\t\\r\\n]+([.][^.*> \\t\\r\\n]+)*$" $prefix) -}}
{{- fail (printf "cluster.subjectPrefix %q is not a NATS subject: dot-separated words without spaces, * or >" $prefix) -}}
{{- end -}}
{{- $out := dict "nats" $nats "subject_prefix" $prefix -}}
{{- with $c.requestTimeout -}}
{{- $d := toString . | trim -}}
{{- if not (regexMatch "^([0-9]*[.]?[0-9]+(ns|us|µs|ms|s|m|h))+$" $d) -}}
{{- fail (printf "cluster.requestTimeout: %q is not a Go duration like 2s or 500ms" $d) -}}
{{- end -}}
{{- if eq (include "kuiperbelt.seconds" (list "cluster.request_timeout" $d) | int) 0 -}}
{{- fail "cluster.requestTimeout must be greater than 0" -}}
{{- end -}}
{{- $_ := set $out "request_timeout" $d -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/*
The config file as rendered into the ConfigMap, after the checks that make the
chart fail instead of deploying something that cannot work.
*/}}
{{- define "kuiperbelt.config" -}}
{{- $v := .Values -}}
{{- if not (has $v.mode (list "nativeSidecar" "sidecar" "standalone" "embedded")) -}}
{{- fail (printf "mode %q is not one of nativeSidecar, sidecar, standalone, embedded" (toString $v.mode)) -}}
{{- end -}}
{{- $cfg := deepCopy (default (dict) $v.config) -}}
{{- range $key := list "port" "sock" -}}
{{- if hasKey $cfg $key -}}
{{- fail (printf "config.%s is set by the chart (ports.websocket); remove it from config" $key) -}}
{{- end -}}
{{- end -}}
{{- $api := dict -}}
{{- if hasKey $cfg "api" -}}{{- $api = default (dict) (get $cfg "api") -}}{{- end -}}
{{- $owners := dict "listen" "ports.api, api.bindAddress" "token" "api.token" "token_file" "api.token: the token Secret is mounted as a file" -}}
{{- range $key := list "listen" "token" "token_file" -}}
{{- if hasKey $api $key -}}
{{- fail (printf "config.api.%s is set by the chart (%s); remove it from config" $key (get $owners $key)) -}}
{{- end -}}
{{- end -}}
{{- $metrics := dict -}}
{{- if hasKey $cfg "metrics" -}}{{- $metrics = default (dict) (get $cfg "metrics") -}}{{- end -}}
{{- if hasKey $metrics "listen" -}}
{{- fail "config.metrics.listen is set by the chart (metrics.enabled, ports.metrics); remove it from config" -}}
{{- end -}}
{{- if hasKey $cfg "cluster" -}}
{{- fail "config.cluster is set by the chart (cluster.enabled, cluster.nats.*, cluster.subjectPrefix, cluster.requestTimeout; credentials from Secrets); remove it from config" -}}
{{- end -}}
{{- $callback := dict -}}
{{- if hasKey $cfg "callback" -}}{{- $callback = default (dict) (get $cfg "callback") -}}{{- end -}}
{{- $connect := get $callback "connect" | toString -}}
{{- if not (hasPrefix "http://" $connect) -}}
{{- fail "config.callback.connect is required: the http:// URL of the app's connect callback" -}}
{{- end -}}
{{- if and (eq $v.mode "standalone") (regexMatch "^http://(localhost|127\\.[0-9.]+|\\[::1\\])([:/]|$)" $connect) -}}
{{- fail (printf "mode standalone: config.callback.connect %q points at the kuiperbelt pod itself; use your app's Service URL" $connect) -}}
{{- end -}}
{{- $drain := dict -}}
{{- if hasKey $cfg "drain" -}}{{- $drain = default (dict) (get $cfg "drain") -}}{{- end -}}
{{- $_ := set $drain "announce_delay" (default "5s" (get $drain "announce_delay")) -}}
{{- $_ := set $drain "spread" (default "10s" (get $drain "spread")) -}}
{{- $_ := set $drain "timeout" (default "30s" (get $drain "timeout")) -}}
{{- $announce := include "kuiperbelt.seconds" (list "drain.announce_delay" $drain.announce_delay) | int -}}
{{- $spread := include "kuiperbelt.seconds" (list "drain.spread" $drain.spread) | int -}}
{{- $timeout := include "kuiperbelt.seconds" (list "drain.timeout" $drain.timeout) | int -}}
{{- if lt $timeout (add $announce $spread) -}}
{{- fail (printf "config.drain.timeout (%v) must be at least drain.announce_delay + drain.spread (%v + %v)" $drain.timeout $drain.announce_delay $drain.spread) -}}
{{- end -}}
{{- $_ := set $cfg "drain" $drain -}}
{{- $_ := set $cfg "port" (int $v.ports.websocket) -}}
{{- $_ := set $api "listen" (printf "%s:%d" (include "kuiperbelt.apiBindAddress" .) (int $v.ports.api)) -}}
{{- if include "kuiperbelt.hasToken" . -}}
{{- $_ := set $api "token_file" (include "kuiperbelt.tokenFile" .) -}}
{{- end -}}
{{- $_ := set $cfg "api" $api -}}
{{- if $v.metrics.enabled -}}
{{- $_ := set $metrics "listen" (printf "0.0.0.0:%d" (int $v.ports.metrics)) -}}
{{- $_ := set $cfg "metrics" $metrics -}}
{{- end -}}
{{- if $v.cluster.enabled -}}
{{- $_ := set $cfg "cluster" (include "kuiperbelt.clusterConfig" . | fromYaml) -}}
{{- else -}}
{{- $_ := include "kuiperbelt.natsAuth" . -}}
{{- end -}}
{{- if and (eq $v.mode "standalone") (not (include "kuiperbelt.hasToken" .)) (not $v.api.allowNoToken) -}}
{{- fail "mode standalone exposes the push API to the cluster: set api.token.existingSecret (or api.token.value), or api.allowNoToken=true" -}}
{{- end -}}
{{- if and (or $v.metrics.podMonitor.enabled $v.metrics.serviceMonitor.enabled) (not $v.metrics.enabled) -}}
{{- fail "metrics.podMonitor/serviceMonitor need metrics.enabled=true (the metrics listener they scrape)" -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* PUBLIC: seconds kubelet waits for the pod: drain deadline + margin, or the value given if large enough. */}}
{{- define "kuiperbelt.terminationGracePeriodSeconds" -}}
{{- $cfg := include "kuiperbelt.config" . | fromYaml -}}
{{- $timeout := include "kuiperbelt.seconds" (list "drain.timeout" $cfg.drain.timeout) | int -}}
{{- $margin := int .Values.terminationGraceMarginSeconds -}}
{{- if lt $margin 1 -}}
{{- fail "terminationGraceMarginSeconds must be at least 1" -}}
{{- end -}}
{{- $needed := add $timeout $margin -}}
{{- $given := .Values.terminationGracePeriodSeconds -}}
{{- if kindIs "invalid" $given -}}
{{- $needed -}}
{{- else if lt (int $given) $needed -}}
{{- fail (printf "terminationGracePeriodSeconds %d is too short: the drain may take config.drain.timeout (%ds) and the app needs terminationGraceMarginSeconds (%ds) after it; use at least %d" (int $given) $timeout $margin $needed) -}}
{{- else -}}
{{- int $given -}}
{{- end -}}
{{- end -}}

{{/* PUBLIC: pod annotations; the checksum rolls the pods when the config changes. */}}
{{- define "kuiperbelt.podAnnotations" -}}
checksum/kuiperbelt-config: {{ include "kuiperbelt.config" . | sha256sum }}
{{- end -}}

{{/* PUBLIC: pod spec fields kuiperbelt needs (see README.md for why). */}}
{{- define "kuiperbelt.podSettings" -}}
enableServiceLinks: false
terminationGracePeriodSeconds: {{ include "kuiperbelt.terminationGracePeriodSeconds" . }}
{{- end -}}

{{/*
PUBLIC: the pod volumes kuiperbelt mounts (list items for `volumes:`): the
ConfigMap and, with a token, the token Secret; in cluster mode with
cluster.nats.credsSecret, the NATS .creds Secret.
*/}}
{{- define "kuiperbelt.volumes" -}}
- name: kuiperbelt-config
  configMap:
    name: {{ include "kuiperbelt.fullname" . }}
    items:
      - key: config.yml
        path: config.yml
{{- if include "kuiperbelt.hasToken" . }}
- name: kuiperbelt-api-token
  secret:
    secretName: {{ include "kuiperbelt.tokenSecretName" . | quote }}
    items:
      - key: {{ .Values.api.token.key | quote }}
        path: token
{{- end }}
{{- if include "kuiperbelt.hasNatsCreds" . }}
- name: kuiperbelt-nats-creds
  secret:
    secretName: {{ .Values.cluster.nats.credsSecret | quote }}
    items:
      - key: {{ .Values.cluster.nats.credsKey | quote }}
        path: {{ base (include "kuiperbelt.natsCredsFile" .) }}
{{- end }}
{{- end -}}

{{- define "kuiperbelt.containerBody" -}}
name: kuiperbelt
image: {{ include "kuiperbelt.image" . | quote }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
args:
  - -config=/etc/kuiperbelt/config.yml
{{- $env := list -}}
{{- if eq .Values.mode "standalone" -}}
{{- $env = append $env (dict "name" "POD_IP" "valueFrom" (dict "fieldRef" (dict "fieldPath" "status.podIP"))) -}}
{{- if not (hasKey (default (dict) .Values.config) "endpoint") -}}
{{- $env = append $env (dict "name" "KUIPERBELT_ENDPOINT" "value" (printf "$(POD_IP):%d" (int .Values.ports.api))) -}}
{{- end -}}
{{- end -}}
{{- if .Values.cluster.enabled -}}
{{- $n := .Values.cluster.nats -}}
{{- $auth := include "kuiperbelt.natsAuth" . -}}
{{- $keys := dict -}}
{{- if eq $auth "token" -}}
{{- $keys = dict "KUIPERBELT_CLUSTER__NATS__TOKEN" (default "token" $n.tokenKey) -}}
{{- else if eq $auth "userPassword" -}}
{{- $keys = dict "KUIPERBELT_CLUSTER__NATS__USER" $n.userKey "KUIPERBELT_CLUSTER__NATS__PASSWORD" $n.passwordKey -}}
{{- end -}}
{{- range $name := keys $keys | sortAlpha | reverse -}}
{{- $env = append $env (dict "name" $name "valueFrom" (dict "secretKeyRef" (dict "name" $n.existingSecret "key" (get $keys $name)))) -}}
{{- end -}}
{{- end -}}
{{- $env = concat $env .Values.extraEnv -}}
{{- with $env }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
ports:
  - name: websocket
    containerPort: {{ .Values.ports.websocket }}
    protocol: TCP
{{- if ne (include "kuiperbelt.apiBindAddress" .) "127.0.0.1" }}
  - name: api
    containerPort: {{ .Values.ports.api }}
    protocol: TCP
{{- end }}
{{- if .Values.metrics.enabled }}
  - name: metrics
    containerPort: {{ .Values.ports.metrics }}
    protocol: TCP
{{- end }}
volumeMounts:
  - name: kuiperbelt-config
    mountPath: /etc/kuiperbelt
    readOnly: true
{{- if include "kuiperbelt.hasToken" . }}
  {{- /* No subPath: kubelet does not update subPath mounts when the Secret changes. */}}
  - name: kuiperbelt-api-token
    mountPath: {{ include "kuiperbelt.tokenDir" . }}
    readOnly: true
{{- end }}
{{- if include "kuiperbelt.hasNatsCreds" . }}
  - name: kuiperbelt-nats-creds
    mountPath: {{ include "kuiperbelt.natsCredsDir" . }}
    readOnly: true
{{- end }}
{{- with .Values.startupProbe }}
startupProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.livenessProbe }}
livenessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.readinessProbe }}
readinessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* PUBLIC: kuiperbelt as a regular container (a list item for `containers:`). */}}
{{- define "kuiperbelt.container" -}}
- {{ include "kuiperbelt.containerBody" . | nindent 2 | trim }}
{{- end -}}

{{/* PUBLIC: kuiperbelt as a native sidecar (a list item for `initContainers:`, Kubernetes 1.29+). */}}
{{- define "kuiperbelt.initContainer" -}}
- {{ include "kuiperbelt.containerBody" . | nindent 2 | trim }}
  restartPolicy: Always
{{- end -}}

{{/* The app's preStop script: POST /drain on the local API with whatever client the image has. */}}
{{- define "kuiperbelt.drainScript" -}}
{{- $url := printf "http://%s:%d/drain" (include "kuiperbelt.apiLocalHost" .) (int .Values.ports.api) -}}
{{- $cfg := include "kuiperbelt.config" . | fromYaml -}}
{{- $t := add (include "kuiperbelt.seconds" (list "drain.timeout" $cfg.drain.timeout) | int) 5 -}}
{{- $token := include "kuiperbelt.hasToken" . -}}
u={{ $url }}; t={{ $t }}
{{- if $token }}; a="Authorization: Bearer ${KUIPERBELT_API_TOKEN}"{{ end }}
if command -v curl >/dev/null 2>&1; then exec curl -fsS -m "$t" -X POST {{ if $token }}-H "$a" {{ end }}"$u"
elif command -v wget >/dev/null 2>&1; then exec wget -q -O - -T "$t" --post-data= {{ if $token }}--header "$a" {{ end }}"$u"
elif command -v python3 >/dev/null 2>&1; then exec python3 -c 'import os,sys,urllib.request as r; t=os.environ.get("KUIPERBELT_API_TOKEN"); r.urlopen(r.Request(sys.argv[1], data=b"", method="POST", headers={"Authorization": "Bearer "+t} if t else {}), timeout=float(sys.argv[2]))' "$u" "$t"
else echo "kuiperbelt drain hook: no curl, wget or python3 in this image; set drainHook.command" >&2; exit 1
fi
{{- end -}}

{{/* PUBLIC: the app container's `lifecycle:` value: preStop drains kuiperbelt and waits for it. */}}
{{- define "kuiperbelt.appLifecycle" -}}
preStop:
  exec:
    command:
{{- if .Values.drainHook.command }}
      {{- toYaml .Values.drainHook.command | nindent 6 }}
{{- else }}
      - sh
      - -c
      - {{ include "kuiperbelt.drainScript" . | quote }}
{{- end }}
{{- end -}}

{{/* PUBLIC: env items for the app container: where the push API is, and its token. */}}
{{- define "kuiperbelt.appEnv" -}}
- name: KUIPERBELT_API_URL
  value: {{ printf "http://%s:%d" (include "kuiperbelt.apiLocalHost" .) (int .Values.ports.api) | quote }}
{{- if include "kuiperbelt.hasToken" . }}
- name: KUIPERBELT_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "kuiperbelt.tokenSecretName" . }}
      key: {{ .Values.api.token.key }}
{{- end }}
{{- end -}}

{{- define "kuiperbelt.appContainer" -}}
{{- $app := .Values.app -}}
- name: {{ $app.name }}
  image: {{ include "kuiperbelt.appImage" . | quote }}
  imagePullPolicy: {{ $app.image.pullPolicy }}
  {{- with $app.command }}
  command:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $app.args }}
  args:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- $env := $app.env -}}
  {{- if .Values.api.appEnv -}}
  {{- $env = concat (include "kuiperbelt.appEnv" . | fromYamlArray) $app.env -}}
  {{- end -}}
  {{- with $env }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $app.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - name: http
      containerPort: {{ $app.port }}
      protocol: TCP
    {{- with $app.extraPorts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if .Values.drainHook.enabled }}
  lifecycle:
    {{- include "kuiperbelt.appLifecycle" . | nindent 4 }}
  {{- end }}
  {{- with $app.startupProbe }}
  startupProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $app.livenessProbe }}
  livenessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $app.readinessProbe }}
  readinessProbe:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $app.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $app.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $app.volumeMounts }}
  volumeMounts:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}

{{/*
A Prometheus duration (5m, 1h30m, 2d, 0) in whole seconds, rounded up.
Argument: (list "key.for.messages" value).
*/}}
{{- define "kuiperbelt.promSeconds" -}}
{{- $key := index . 0 -}}
{{- $d := index . 1 | toString | trim -}}
{{- $units := dict "ms" 0.001 "s" 1.0 "m" 60.0 "h" 3600.0 "d" 86400.0 "w" 604800.0 "y" 31536000.0 -}}
{{- if eq $d "0" -}}
0
{{- else if regexMatch "^([0-9]+(ms|s|m|h|d|w|y))+$" $d -}}
{{- $total := 0.0 -}}
{{- range regexFindAll "[0-9]+(ms|s|m|h|d|w|y)" $d -1 -}}
{{- $num := regexFind "^[0-9]+" . -}}
{{- $total = addf $total (mulf (float64 $num) (get $units (trimPrefix $num .))) -}}
{{- end -}}
{{- ceil $total | int -}}
{{- else -}}
{{- fail (printf "%s: %q is not a Prometheus duration like 5m or 1h30m" $key $d) -}}
{{- end -}}
{{- end -}}

{{/*
A PromQL selector: the metric with the label matchers given and
prometheusRule.selector. Argument: (list selector metric [matcher...]).
*/}}
{{- define "kuiperbelt.promSelector" -}}
{{- $matchers := list -}}
{{- range (rest .) | rest -}}
{{- $matchers = append $matchers . -}}
{{- end -}}
{{- with index . 0 | trim -}}
{{- $matchers = append $matchers . -}}
{{- end -}}
{{- index . 1 -}}
{{- if $matchers -}}{{ printf "{%s}" (join ", " $matchers) }}{{- end -}}
{{- end -}}

{{/* An alert's labels: severity, then prometheusRule.ruleLabels. Argument: (list $prometheusRule $alert). */}}
{{- define "kuiperbelt.alertLabels" -}}
{{- $r := index . 0 -}}
{{- $x := index . 1 -}}
{{- toYaml (merge (dict "severity" $x.severity) (deepCopy (default (dict) $r.ruleLabels))) -}}
{{- end -}}
