#!/usr/bin/env bash
# Installs what the core test suite needs beyond the Rust toolchain:
# Prometheus and promtool (Debian package `prometheus`) for the metrics tests.
# Idempotent; needs root (or sudo) for apt-get.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install.sh: run as root or install sudo" >&2; exit 1; }
  SUDO="sudo"
fi

if [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; then
  echo "install.sh: prometheus already installed"
else
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
/usr/bin/prometheus --version 2>&1 | head -1
/usr/bin/promtool --version 2>&1 | head -1
