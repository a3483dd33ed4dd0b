#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, from Debian:
# Prometheus and promtool for the metrics tests, Chromium and ChromeDriver for
# the demo's browser test, iproute2 (ip, ss) for the network namespace and
# accept-queue tests, nats-server for the cluster tests.
# Idempotent; needs root (or sudo) for apt-get.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install.sh: run as root or install sudo" >&2; exit 1; }
  SUDO="sudo"
fi

need=()
[ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] || need+=(prometheus)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
{ [ -x /usr/bin/ss ] || [ -x /bin/ss ]; } && command -v ip >/dev/null || need+=(iproute2)
[ -x /usr/sbin/nats-server ] || need+=(nats-server)
if [ ${#need[@]} -gt 0 ]; then
  echo "install.sh: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
/usr/bin/prometheus --version 2>&1 | head -1
/usr/bin/promtool --version 2>&1 | head -1
/usr/bin/chromium --version
/usr/bin/chromedriver --version
ip -V
/usr/sbin/nats-server --version
