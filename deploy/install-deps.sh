#!/usr/bin/env bash
# Installs every Debian package that building, testing, benchmarking and the demo need,
# and the npm packages of the deployment checks (tests/deploy, pinned by its
# package-lock.json, into tests/deploy/node_modules).
# Idempotent: packages already present are left alone, and apt is not touched at all when
# nothing is missing; npm runs only when the lock file changed since the last install.
# Must run as root (or with sudo available) on Debian 12.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

packages=(
  build-essential cmake pkg-config git file
  go-md2man groff-base
  libuv1-dev libmimalloc-dev libgtest-dev libgmock-dev libbenchmark-dev
  libtomlplusplus-dev libspdlog-dev libfmt-dev libcli11-dev libssl-dev libc-ares-dev
  libidn2-dev libcurl4-openssl-dev
  libconcurrentqueue-dev
  python3 python3-aiosmtpd python3-dnslib python3-prometheus-client swaks libnet-ssleay-perl postfix openssl
  python3-dkim opendkim rspamd python3-nacl python3-cryptography libcrypt-dev
  clang libclang-rt-14-dev
  systemd yamllint ccache
  podman runc mmdebstrap
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Node.js and npm by command: a machine may have them from another source than Debian's
# nodejs and npm packages (which would conflict with it).
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Postfix is installed only for its test tools (smtp-source, smtp-sink); tell its
  # configuration script not to set up a mail system on this machine.
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Debian may start the postfix daemon on install; the tests never want it on port 25.
  if command -v postfix >/dev/null 2>&1; then $SUDO postfix stop >/dev/null 2>&1 || true; fi
fi

# The schema checkers of tests/deploy (check_k8s.js, check_compose.js), exactly as locked.
# The lock file's checksum, stored next to the modules, says whether they are current.
checks="$ROOT/tests/deploy"
stamp="$checks/node_modules/.postern-lock.sha256"
want=$(sha256sum "$checks/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "install-deps: npm ci in tests/deploy"
  (cd "$checks" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
  echo "$want" >"$stamp"
fi
