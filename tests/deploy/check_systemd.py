#!/usr/bin/python3
"""check_systemd.py ROOT POSTERN_BIN: validates deploy/systemd/postern.service.

1. The hardening and drain directives the unit must carry, read from the file (several
   of them are also implied by others, so systemd's own analysis would not notice one
   going missing).
2. `systemd-analyze verify` on a copy whose /usr/local/bin/postern is the built binary
   (verify refuses a unit whose ExecStart binary does not exist). verify exits 0 on
   unknown keys and unparsable values and only prints a warning, so any output fails.
3. `systemd-analyze security --offline=true --threshold=25`: overall exposure at most 2.5.
4. The unit's commands, with the built binary and deploy/postern.toml: ExecStartPre
   (check-config) succeeds; ExecStart runs the relay, which accepts connections; the
   ExecReload commands ($MAINPID: the relay) leave it running with config_reloaded in its
   log; on KillSignal it drains and exits 0 within TimeoutStopSec; an invalid config exits with a
   status listed in RestartPreventExitStatus.
Exit status 1 with one FAIL line per problem.
"""
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

UNIT_BIN = "/usr/local/bin/postern"
UNIT_CONFIG = "/etc/postern/postern.toml"

problems = []


def fail(msg):
    problems.append(msg)


def parse_unit(text):
    """section -> key -> [values]; systemd allows a key more than once."""
    out, section = {}, None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = out.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return out


def seconds(value):
    m = re.fullmatch(r"(\d+)\s*(s|sec|min|m)?", value)
    if not m:
        return None
    return int(m.group(1)) * (60 if m.group(2) in ("min", "m") else 1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepting(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def check_directives(svc):
    def one(key):
        v = svc.get(key, [])
        return v[-1] if v else None

    required = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE", "StateDirectory": "postern",
        "Restart": "on-failure", "KillSignal": "SIGTERM",
    }
    for key, want in required.items():
        if one(key) != want:
            fail(f"[Service] {key}={one(key)}: expected {key}={want}")
    if one("DynamicUser") != "yes" and not one("User"):
        fail("[Service] needs DynamicUser=yes or User=")
    stop = seconds(one("TimeoutStopSec") or "")
    # The drain: server.drain_timeout (default 10 s) plus the last fdatasync.
    if stop is None or stop < 15:
        fail(f"[Service] TimeoutStopSec={one('TimeoutStopSec')}: must be at least 15 s for the drain")
    nofile = one("LimitNOFILE") or "0"
    # limits.connections defaults to 20000, plus delivery connections and spool files.
    if not nofile.isdigit() or int(nofile) < 25000:
        fail(f"[Service] LimitNOFILE={nofile}: must be at least 25000 (20000 connections by default)")
    pre = one("ExecStartPre") or ""
    if "check-config" not in pre:
        fail(f"[Service] ExecStartPre={pre}: expected `postern check-config CONFIG`")
    reload = svc.get("ExecReload", [])
    if len(reload) != 2 or "check-config" not in reload[0] or "-HUP $MAINPID" not in reload[1]:
        fail(f"[Service] ExecReload={reload}: expected check-config, then kill -HUP $MAINPID")
    start = shlex.split(one("ExecStart") or "")
    if "--spool-dir" not in start or start[start.index("--spool-dir") + 1] != "/var/lib/" + (one("StateDirectory") or ""):
        fail(f"[Service] ExecStart must pass --spool-dir /var/lib/{one('StateDirectory')} (the StateDirectory)")
    return stop


def analyze(tmp, unit_copy):
    r = subprocess.run(["systemd-analyze", "verify", unit_copy], cwd=tmp,
                       capture_output=True, text=True, timeout=60)
    output = (r.stdout + r.stderr).strip()
    if r.returncode != 0 or output:
        fail(f"systemd-analyze verify (exit {r.returncode}):\n{output}")
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=25",
                        "--no-pager", unit_copy], cwd=tmp, capture_output=True, text=True,
                       timeout=60)
    overall = [l for l in r.stdout.splitlines() if "Overall exposure" in l]
    if r.returncode != 0:
        fail(f"systemd-analyze security: exposure above 2.5: {overall or r.stderr.strip()}")
    else:
        print(overall[0].strip() if overall else "security: ok")


def run_commands(root, postern, svc, stop_timeout, tmp):
    config = os.path.join(tmp, "postern.toml")
    port = free_port()
    with open(os.path.join(root, "deploy", "postern.toml")) as f:
        text = f.read()
    text, n = re.subn(r'(?m)^address\s*=\s*"127\.0\.0\.1:2525"', f'address = "127.0.0.1:{port}"', text)
    # The admin endpoint too, once the relay binds it: other tests may run meanwhile.
    text, m = re.subn(r'(?m)^address\s*=\s*"127\.0\.0\.1:9025"', f'address = "127.0.0.1:{free_port()}"', text)
    if n != 1 or m != 1:
        fail("deploy/postern.toml: expected a listener at 127.0.0.1:2525 and [admin] at "
             "127.0.0.1:9025 to move to free ports")
        return
    with open(config, "w") as f:
        f.write(text)

    def command(key, index=-1, pid=None):
        argv = shlex.split(svc[key][index])
        return [postern if a == UNIT_BIN else config if a == UNIT_CONFIG
                else str(pid) if a == "$MAINPID" else a for a in argv]

    pre = subprocess.run(command("ExecStartPre"), capture_output=True, text=True, timeout=30)
    if pre.returncode != 0:
        fail(f"ExecStartPre exited {pre.returncode}: {pre.stderr.strip()}")

    argv = command("ExecStart")
    spool = os.path.join(tmp, "state")
    argv[argv.index("--spool-dir") + 1] = spool
    log = open(os.path.join(tmp, "relay.log"), "w+")
    relay = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and relay.poll() is None and not accepting(port):
            time.sleep(0.1)
        if not accepting(port):
            log.seek(0)
            fail(f"ExecStart did not start a relay accepting on port {port}: {log.read()[-2000:]}")
            return
        for i in range(len(svc.get("ExecReload", []))):
            r = subprocess.run(command("ExecReload", i, relay.pid), capture_output=True,
                               text=True, timeout=30)
            if r.returncode != 0:
                fail(f"ExecReload #{i + 1} exited {r.returncode}: {r.stderr.strip()}")
        def reloaded():
            with open(log.name) as f:
                return "event=config_reloaded" in f.read()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not reloaded():
            time.sleep(0.1)
        if relay.poll() is not None or not reloaded():
            fail(f"after ExecReload the relay is {'running' if relay.poll() is None else 'gone'} "
                 "without a config_reloaded line")
        sig = getattr(signal, svc["KillSignal"][-1])
        start = time.monotonic()
        relay.send_signal(sig)
        try:
            status = relay.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            fail(f"the relay did not exit within TimeoutStopSec={stop_timeout}s of {sig.name}")
            return
        if status != 0:
            fail(f"the relay exited {status} after {sig.name}; Restart=on-failure would restart a clean stop")
        print(f"drain on {sig.name}: exit {status} after {time.monotonic() - start:.2f} s")
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait()
        log.close()

    # A bad config must not be restarted in a loop.
    with open(config, "a") as f:
        f.write("\n[server]\nno_such_key = 1\n")
    bad = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    prevent = " ".join(svc.get("RestartPreventExitStatus", [])).split()
    if bad.returncode == 0 or str(bad.returncode) not in prevent:
        fail(f"an invalid config exits {bad.returncode}, not in RestartPreventExitStatus={prevent}")


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    root, postern = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    unit_path = os.path.join(root, "deploy", "systemd", "postern.service")
    with open(unit_path) as f:
        text = f.read()
    unit = parse_unit(text)
    svc = unit.get("Service", {})
    for section in ("Unit", "Service", "Install"):
        if section not in unit:
            fail(f"no [{section}] section")
    stop_timeout = check_directives(svc) or 30
    if UNIT_BIN not in text:
        fail(f"the unit does not run {UNIT_BIN}; update {sys.argv[0]}")
    with tempfile.TemporaryDirectory(prefix="postern-systemd-") as tmp:
        copy = os.path.join(tmp, "postern.service")
        with open(copy, "w") as f:
            f.write(text.replace(UNIT_BIN, postern))
        analyze(tmp, copy)
        if not problems:
            run_commands(root, postern, svc, stop_timeout, tmp)
    for p in problems:
        print(f"FAIL deploy/systemd/postern.service: {p}", file=sys.stderr)
    if problems:
        return 1
    print("check_systemd: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
