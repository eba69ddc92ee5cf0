#!/usr/bin/env bash
# Installs every Debian package that building, testing, benchmarking and the demo need.
# Idempotent: packages already present are left alone, and apt is not touched at all when
# nothing is missing. Must run as root (or with sudo available) on Debian 12.
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libuv1-dev libmimalloc-dev libgtest-dev libgmock-dev libbenchmark-dev
  libtomlplusplus-dev libspdlog-dev libfmt-dev libcli11-dev libssl-dev libc-ares-dev
  libconcurrentqueue-dev
  python3 python3-aiosmtpd python3-dnslib python3-prometheus-client swaks libnet-ssleay-perl postfix openssl
  clang libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Postfix is installed only for its test tools (smtp-source, smtp-sink); tell its
# configuration script not to set up a mail system on this machine.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
# Debian may start the postfix daemon on install; the tests never want it on port 25.
if command -v postfix >/dev/null 2>&1; then $SUDO postfix stop >/dev/null 2>&1 || true; fi
