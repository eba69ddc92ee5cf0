#!/usr/bin/env bash
# bench/backlog.sh BUILD_DIR [--messages N] [options]: the relay with a large queue
# backlog, the last step of `make bench`.
#
# Queues N messages of 1 KB (default 200,000; --messages 1000000 for the full figure)
# for a next hop that is down, restarts the relay on that spool, then brings the next hop
# up and flushes the queue. Reports the relay's VmRSS at each step (idle, with the queue,
# after the replay, after the drain), RSS per queued message, accepted msgs/s, the spool
# on disk, the time from the restart to /healthz, to the first 250 for a new message and
# to the end of the replay (each worker's spool_recovered line), replay MiB/s, and drain
# msgs/s. Writes a Markdown table to stdout and to BUILD_DIR/bench-backlog.md; exit
# status 1 if a message was lost or a step failed or timed out.
#
# Loopback only (127.0.0.1), bounded in messages and in time (--step-timeout, default
# 60 s + 1 ms per message for each of queueing, replay and drain). The spool goes under
# /var/tmp (--workdir), about 1.5 GB for a million messages, and is removed at the end
# (--keep keeps it).
# Needs postern and postern-load in BUILD_DIR and /usr/bin/python3; the work is done by
# bench/backlog.py (`--help` lists the options).
set -euo pipefail

if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: $0 BUILD_DIR [--messages N] [--workers W] [--step-timeout S]" \
    "[--workdir DIR] [--keep] ..." >&2
  exit 2
fi
HERE=$(cd "$(dirname "$0")" && pwd)
exec /usr/bin/python3 "$HERE/backlog.py" "$@"
