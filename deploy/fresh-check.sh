#!/usr/bin/env bash
# fresh-check.sh [WORK_DIR]: the README's two commands on a plain Debian 12, as a new user
# would run them, from a clean base (`make fresh-check`).
#
# 1. A minimal Debian 12 base made now with mmdebstrap (--variant=minbase, plus
#    ca-certificates, which every Debian installer and cloud image has) from the Debian
#    mirror this machine's apt uses (deploy/debian-base.sh).
# 2. A container from it, as root with all capabilities like root on a machine of its own
#    (--privileged: the tests mount a tmpfs, and deploy.dockerfile runs podman inside), its
#    own network namespace (the demo's fixed ports do not meet this machine's), this
#    machine's CA bundle (/etc/ssl/certs/ca-certificates.crt) mounted read-only over the
#    container's so that the registries answer as they do here (only the file: packages
#    write into /etc/ssl/certs, ssl-cert's snakeoil certificate for postfix among them),
#    and an empty container storage for the podman inside.
# 3. Inside, what the README tells a new machine: `apt-get install git make`, `git clone`
#    (of this repository's committed HEAD, through a git bundle: uncommitted changes are
#    not checked), then `make demo` and `make test`, each timed.
#
# Prints what passed with its time and the closing lines of each command, and exits 0 only
# when both passed. Logs and the summary stay in WORK_DIR (default
# /var/tmp/postern-fresh-check). Needs root, podman, runc and mmdebstrap (installed here
# with apt-get when missing). Not part of `make test`: about 25 minutes on two cores.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-/var/tmp/postern-fresh-check}
BASE=localhost/postern-fresh-check:bookworm
NAME=postern-fresh-check-$$
# Inside the container the commands run at this niceness, so that a shared machine stays
# usable; on a machine of its own it changes nothing.
NICE=${FRESH_CHECK_NICE:-10}

say() { echo "fresh-check: $*"; }

[ "$(id -u)" -eq 0 ] || { say "needs root (mmdebstrap, podman)"; exit 1; }
missing=()
for tool in podman runc mmdebstrap git; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

commit=$(git -C "$ROOT" rev-parse HEAD)
say "checking $(git -C "$ROOT" log -1 --format='%h %s' | cut -c1-100)"
if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]; then
  say "note: the working tree has uncommitted changes; only the commit is checked"
fi

rm -rf "$WORK"
mkdir -p "$WORK/in" "$WORK/out" "$WORK/containers"
trap 'podman --runtime runc rm -f "$NAME" >/dev/null 2>&1 || true; rm -rf "$WORK/containers"' EXIT

start=$SECONDS
"$ROOT/deploy/debian-base.sh" --rebuild --include ca-certificates "$BASE"
base_s=$((SECONDS - start))

git -C "$ROOT" bundle create "$WORK/in/postern.bundle" HEAD 2>/dev/null
# What a new user types, in order; each step is timed and its result kept in /out.
cat >"$WORK/in/inside.sh" <<EOF
#!/bin/bash
set -u
export DEBIAN_FRONTEND=noninteractive
step() {
  local name=\$1; shift
  local t0=\$SECONDS
  echo "==== \$name: \$*"
  if nice -n $NICE "\$@" > >(tee "/out/\$name.log") 2>&1; then r=passed; else r="FAILED (exit \$?)"; fi
  echo "\$name \$r \$((SECONDS - t0))" >> /out/results
  echo "==== \$name: \$r in \$((SECONDS - t0)) s"
  [ "\$r" = passed ]
}
cd /root
step apt-get-install bash -c 'apt-get update -q && apt-get install -y -q git make' || exit 1
step git-clone bash -c 'git -c advice.detachedHead=false clone -q /in/postern.bundle postern && git -C postern checkout -q -B fresh-check $commit' || exit 1
cd /root/postern
step make-demo make demo
step make-test make test
exit 0
EOF

# Limits podman can apply here (a sandbox may refuse to raise a hard limit).
nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ] && nofile=65536
limits=()
for nproc in 32768 4096; do
  limits=(--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
  if podman --runtime runc run --rm --network none "${limits[@]}" "$BASE" true 2>/dev/null; then break; fi
  limits=()
done
[ ${#limits[@]} -gt 0 ] || { say "podman cannot start a container here"; exit 1; }

say "container $NAME from $BASE: apt-get install git make, git clone, make demo, make test"
podman --runtime runc run --name "$NAME" --privileged "${limits[@]}" \
  -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  -v "$WORK/in:/in:ro" -v "$WORK/out:/out" \
  -v "$WORK/containers:/var/lib/containers" \
  "$BASE" bash /in/inside.sh 2>&1 | grep -v 'unable to get systemd connection' || true
total_s=$((SECONDS - start))

# ---- summary --------------------------------------------------------------------------------
{
  echo "fresh-check of $commit on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, nice $NICE"
  echo "  base image (mmdebstrap minbase bookworm + ca-certificates)  ${base_s} s"
  ok=1
  for want in apt-get-install git-clone make-demo make-test; do
    line=$(grep "^$want " "$WORK/out/results" 2>/dev/null || true)
    if [ -z "$line" ]; then
      printf '  %-18s %s\n' "$want" "not run"; ok=0; continue
    fi
    secs=${line##* }; result=${line#"$want "}; result=${result% *}
    printf '  %-18s %-22s %dm%02ds\n' "$want" "$result" $((secs / 60)) $((secs % 60))
    [ "$result" = passed ] || ok=0
  done
  echo "  total              $((total_s / 60))m$((total_s % 60))s"
  if [ -f "$WORK/out/make-demo.log" ]; then
    echo "make demo, last lines:"
    grep -v '^\s*$' "$WORK/out/make-demo.log" | tail -n 6 | sed 's/^/  /'
  fi
  if [ -f "$WORK/out/make-test.log" ]; then
    echo "make test:"
    grep -E 'tests passed|tests failed out of|\(Failed\)|\(Timeout\)|\*\*\*Skipped|\(Not Run\)|Total Test time|fuzz' \
      "$WORK/out/make-test.log" | tail -n 20 | sed 's/^/  /'
  fi
  [ $ok -eq 1 ] && echo "fresh-check: PASSED: make demo and make test on a plain Debian 12" \
               || echo "fresh-check: FAILED (logs in $WORK/out)"
} | tee "$WORK/summary.txt"
grep -q '^fresh-check: PASSED' "$WORK/summary.txt"
