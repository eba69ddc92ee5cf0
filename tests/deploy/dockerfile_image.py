#!/usr/bin/python3
"""dockerfile_image.py ROOT WORK_DIR: builds deploy/Dockerfile and runs the image.

The Dockerfile is judged by the image it makes, not by the machine the test runs on:

1. Parse deploy/Dockerfile (line continuations, comments, exec and shell forms) and
   check its shape: a `build` stage and a final stage, both FROM debian:12-slim; the
   final stage installs no -dev or build packages, runs as a numeric non-root USER,
   declares the spool VOLUME, EXPOSEs 25 and 9025, has a HEALTHCHECK and an exec-form
   ENTRYPOINT. The HEALTHCHECK command (bash) passes against a stub answering 200 on
   /healthz and fails against 503, a closed port and a silent server.
2. Where the container tools run (root, podman with runc; mmdebstrap when the base image
   is not there yet), build the image as Docker would: the base debian:12-slim is made
   from this machine's Debian mirror by deploy/debian-base.sh (no image registry is
   reachable) and `podman build --format docker --pull=never --network host` builds
   deploy/Dockerfile from ROOT (its .dockerignore applies). Where they do not, print why
   and exit 77, which CTest reports as skipped: the image is never passed unbuilt.
3. Check the image: every binary copied from the build stage runs (`--help`) and finds
   every library (`ldd` in the image; the package owning each, by the image's dpkg);
   `postern check-config` passes on the config the ENTRYPOINT and CMD name; then the
   image runs as built (its USER, ENTRYPOINT and CMD, a read-only root filesystem, its
   own network namespace with only loopback, explicit ulimits) with that config, the
   route pointed at a postern-load sink inside the container: the SMTP greeting, the
   image's HEALTHCHECK (`podman healthcheck run`), 100 messages through the relay to
   the sink, all unique and intact, then SIGTERM (`podman stop`) exits 0 and every log
   line is JSON.

The build keeps podman's layer cache (the base and both apt-get layers are reused while
the Dockerfile's lines before COPY are unchanged) and removes the images of the previous
run. Timing on two cores: 3.5 minutes from nothing (base 45 s, build stage's apt-get 30 s,
Release compile of postern and postern-load 110 s, runtime stage 10 s, checks 5 s); about
2 minutes when only the sources changed (the compile); 15 s when nothing did.
Exit status 0 passed, 1 with one FAIL line per problem, 77 skipped.
"""
import hashlib
import http.server
import json
import os
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import tomllib

SKIP = 77
BASE = "debian:12-slim"
SINK_PORT = 2526
MESSAGES = 100
problems = []


def fail(msg):
    problems.append(msg)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- parsing ----------------------------------------------------------------------------

def instructions(text):
    """(line number, INSTRUCTION, arguments) for each instruction of a Dockerfile."""
    out, buf, start = [], [], None
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue  # comments are dropped, even inside a continued instruction
        if start is None:
            start = n
        if stripped.endswith("\\"):
            buf.append(stripped[:-1])
            continue
        buf.append(stripped)
        line = " ".join(part.strip() for part in buf if part.strip())
        word, _, rest = line.partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf, start = [], None
    if buf:
        fail(f"Dockerfile ends inside a continued instruction (line {start})")
    return out


def stages(instrs):
    result = []
    for n, word, rest in instrs:
        if word == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            result.append({"line": n, "image": m.group(1), "name": m.group(2), "steps": []})
        elif result:
            result[-1]["steps"].append((n, word, rest))
        else:
            fail(f"line {n}: {word} before FROM")
    return result


def exec_form(rest):
    if rest.startswith("["):
        return json.loads(rest)
    return ["/bin/sh", "-c", rest]


def apt_packages(cmd):
    """The packages of every `apt-get install` in a shell command."""
    pkgs = []
    for part in re.split(r"&&|;|\|\|", cmd):
        words = shlex.split(part)
        if "apt-get" in words and "install" in words:
            pkgs += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return pkgs


def copy_args(rest):
    words = shlex.split(rest)
    opts = {w.split("=", 1)[0][2:]: w.split("=", 1)[1] for w in words if w.startswith("--")}
    words = [w for w in words if not w.startswith("--")]
    if words and words[0].startswith("["):
        words = json.loads(rest[rest.index("["):])
    return opts, words[:-1], words[-1]


# ---- shape --------------------------------------------------------------------------------

BUILD_TOOLS = {"build-essential", "cmake", "pkg-config", "gcc", "g++", "clang", "make", "git"}


def check_shape(st):
    if len(st) != 2 or st[0]["name"] != "build":
        fail("expected two stages: `FROM ... AS build` and the runtime stage")
    for s in st:
        if s["image"] != "debian:12-slim":
            fail(f"line {s['line']}: FROM {s['image']}: expected debian:12-slim")
    final = st[-1]
    words = {}
    for n, word, rest in final["steps"]:
        words.setdefault(word, []).append((n, rest))
    pkgs = [p for _, rest in words.get("RUN", []) for p in apt_packages(rest)]
    for p in pkgs:
        if p.endswith("-dev") or p in BUILD_TOOLS:
            fail(f"runtime stage installs {p}: build packages belong in the build stage")
    user = words.get("USER", [(0, "")])[-1][1]
    uid = user.split(":")[0]
    if not uid.isdigit() or int(uid) == 0:
        fail(f"USER {user!r}: must be a numeric non-root uid (Kubernetes runAsNonRoot checks it)")
    volumes = [v for _, rest in words.get("VOLUME", []) for v in
               (json.loads(rest) if rest.startswith("[") else rest.split())]
    if "/var/spool/postern" not in volumes:
        fail(f"VOLUME {volumes}: expected /var/spool/postern")
    exposed = {p.split("/")[0] for _, rest in words.get("EXPOSE", []) for p in rest.split()}
    for port in ("25", "9025"):
        if port not in exposed:
            fail(f"EXPOSE {sorted(exposed)}: expected {port}")
    if "HEALTHCHECK" not in words:
        fail("no HEALTHCHECK")
    if not words.get("ENTRYPOINT", [(0, "")])[-1][1].startswith("["):
        fail("ENTRYPOINT must be in exec form, so that the relay is PID 1 and gets SIGTERM")
    return words, pkgs


class Stub(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def healthcheck(words):
    line = words["HEALTHCHECK"][-1][1]
    m = re.search(r"\bCMD\s+(.*)$", line)
    opts = dict(re.findall(r"--([\w-]+)=(\S+)", line[:m.start()] if m else ""))
    argv = exec_form(m.group(1)) if m else None
    if not argv or "/9025" not in " ".join(argv):
        fail(f"HEALTHCHECK {line}: expected a probe of 127.0.0.1:9025 (the admin endpoint)")
        return
    timeout = float(opts.get("timeout", "30s").rstrip("s"))

    def probe(port):
        cmd = [a.replace("/9025", f"/{port}") for a in argv]
        start = time.monotonic()
        try:
            r = subprocess.run(cmd, capture_output=True, timeout=timeout)
            return r.returncode, time.monotonic() - start
        except subprocess.TimeoutExpired:
            return "timeout", timeout

    def free():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    for status, want_ok in ((200, True), (503, False)):
        Stub.status = status
        server = http.server.HTTPServer(("127.0.0.1", 0), Stub)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        rc, took = probe(server.server_address[1])
        server.shutdown()
        server.server_close()
        if (rc == 0) != want_ok:
            fail(f"HEALTHCHECK against /healthz answering {status}: exit {rc}, expected "
                 f"{'0' if want_ok else 'non-zero'}")
    rc, _ = probe(free())
    if rc == 0:
        fail("HEALTHCHECK passes with nothing listening on the admin port")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        rc, took = probe(silent.getsockname()[1])
    if rc == 0 or rc == "timeout":
        fail(f"HEALTHCHECK against a server that never answers: {rc} (must fail by itself "
             f"within --timeout={timeout:g}s)")
    log(f"HEALTHCHECK: passes on 200, fails on 503, a closed port and silence ({took:.1f} s)")


# ---- the container tools -------------------------------------------------------------------

# Podman prints these when it cannot reach systemd to schedule the healthcheck timer; the
# test runs the HEALTHCHECK itself (`podman healthcheck run`).
NOISE = re.compile(r"unable to get systemd connection|healthcheck.*systemd", re.I)


def podman(*args, timeout=120, **kw):
    """`podman --runtime runc ARGS` with captured text output, podman's noise dropped."""
    try:
        r = subprocess.run(["podman", "--runtime", "runc", *args], capture_output=True,
                           text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(e.cmd, "timeout", e.stdout or "", f"timed out after {timeout} s")
    r.stderr = "\n".join(line for line in r.stderr.splitlines() if not NOISE.search(line))
    return r


def last_line(text):
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def image_id(name):
    r = podman("image", "inspect", "--format", "{{.Id}}", name)
    return r.stdout.strip() if r.returncode == 0 else None


def why_not():
    """Why the image cannot be built here, or None."""
    if os.geteuid() != 0:
        return f"needs root for podman with runc (running as uid {os.geteuid()})"
    missing = [t for t in ("podman", "runc") if not shutil.which(t)]
    if missing:
        return f"{' and '.join(missing)} not installed (deploy/install-deps.sh installs them)"
    if image_id(BASE) is None and not shutil.which("mmdebstrap"):
        return (f"no {BASE} image and no mmdebstrap to make one from the Debian mirror "
                f"(deploy/install-deps.sh installs it)")
    return None


def ulimits():
    """--ulimit options podman can apply here: a sandbox may refuse to raise hard limits,
    and podman's own defaults ask for more than this machine's."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 65536)
    nproc_hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    if nproc_hard == resource.RLIM_INFINITY:
        nproc_hard = 1 << 20
    error = ""
    for nproc in (min(nproc_hard, 32768), 4096):
        opts = ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]
        r = podman("run", "--rm", "--network", "none", *opts, BASE, "true", timeout=60)
        if r.returncode == 0:
            return opts, None
        error = last_line(r.stderr) or f"exit {r.returncode}"
    return None, error


def make_base(root):
    if image_id(BASE) is not None:
        log(f"base {BASE}: there ({image_id(BASE)[:12]})")
        return True
    start = time.monotonic()
    r = subprocess.run([os.path.join(root, "deploy", "debian-base.sh"), "--slim", BASE],
                       capture_output=True, text=True)
    print(r.stdout, end="")
    if r.returncode != 0:
        print(r.stderr[-4000:])
        fail(f"deploy/debian-base.sh {BASE} exited {r.returncode}")
        return False
    log(f"base {BASE}: made in {time.monotonic() - start:.0f} s")
    return True


_revision = None


def revision(root):
    """What the build stage is told to name (the context has no .git): asked once, so the
    check compares with what the build was given even if the tree changes meanwhile."""
    global _revision
    if _revision is None:
        r = subprocess.run(["git", "-C", root, "describe", "--always", "--dirty", "--tags"],
                           capture_output=True, text=True)
        _revision = r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "unknown"
    return _revision


def build(root, work, tag, limits):
    """Builds the build stage (tagged :build, for the layer cache) and the image (:latest);
    returns the image name or None."""
    logfile = os.path.join(work, "build.log")
    old = {t: image_id(f"{tag}:{t}") for t in ("build", "latest")}
    common = ["build", "--format", "docker", "--pull=never", "--network", "host", "--layers",
              *limits, "--build-arg", f"JOBS={os.cpu_count() or 2}",
              "--build-arg", f"POSTERN_REVISION={revision(root)}",
              "-f", os.path.join(root, "deploy", "Dockerfile")]
    with open(logfile, "w") as out:
        for target, extra in (("build", ["--target", "build"]), ("latest", [])):
            start = time.monotonic()
            step, step_start = None, start
            p = subprocess.Popen(["podman", "--runtime", "runc", *common, *extra,
                                  "-t", f"{tag}:{target}", root],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            tail = []
            for line in p.stdout:
                out.write(line)
                tail = (tail + [line])[-60:]
                m = re.match(r"(?:\[(\d+)/\d+\] )?STEP (\d+/\d+): (.*)", line)
                if m or line.startswith("--> Using cache"):
                    now = time.monotonic()
                    if step and now - step_start >= 2:
                        log(f"  {step[:90]}: {now - step_start:.0f} s")
                    step, step_start = (f"stage {m.group(1) or 1} step {m.group(2)} {m.group(3)}"
                                        if m else None), now
            rc = p.wait()
            now = time.monotonic()
            if step and now - step_start >= 2:
                log(f"  {step[:90]}: {now - step_start:.0f} s")
            if rc != 0:
                print("".join(tail))
                fail(f"podman build{' --target build' if extra else ''} exited {rc} (log: {logfile})")
                return None
            log(f"podman build {tag}:{target}: {now - start:.0f} s")
    for t, was in old.items():
        if was and was != image_id(f"{tag}:{t}"):
            podman("rmi", was)  # the previous run's; layers still in use stay
    return f"{tag}:latest"


# ---- checking the image ----------------------------------------------------------------------

def check_image(image, words, pkgs, root, work, limits):
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    cfg = info.get("Config") or {}
    log(f"image {image}: {info['Size'] / 1e6:.1f} MB, user {cfg.get('User')}, "
        f"entrypoint {cfg.get('Entrypoint')}, cmd {cfg.get('Cmd')}")
    if not (info.get("Healthcheck") or cfg.get("Healthcheck") or {}).get("Test"):
        fail("the image has no HEALTHCHECK (built without --format docker?)")
    uid = str(cfg.get("User", "")).split(":")[0]
    if not uid.isdigit() or int(uid) == 0:
        fail(f"image user {cfg.get('User')!r}: expected a numeric non-root uid")

    binaries = []
    for n, rest in words.get("COPY", []):
        opts, srcs, dest = copy_args(rest)
        if opts.get("from") == "build":
            binaries += [dest.rstrip("/") + "/" + os.path.basename(s) if dest.endswith("/") else dest
                         for s in srcs]
    entry = cfg.get("Entrypoint") or []
    argv = entry + (cfg.get("Cmd") or [])
    if not entry or entry[0] not in binaries:
        fail(f"ENTRYPOINT {entry}: not a binary copied from the build stage")
        return
    run = ["run", "--rm", "--network", "none", *limits]
    for b in binaries:
        r = podman(*run, "--entrypoint", b, image, "--help")
        if r.returncode != 0:
            fail(f"{b} --help in the image exited {r.returncode}: {last_line(r.stderr)}")
        else:
            log(f"{b} --help: ok")

    r = podman(*run, "--entrypoint", entry[0], image, "--version")
    want = f"({revision(root)})"
    if r.returncode != 0 or want not in r.stdout:
        fail(f"{entry[0]} --version in the image: {r.stdout.strip()!r}, expected {want}")
    else:
        log(f"{entry[0]} --version: {r.stdout.strip()}")

    # Libraries: ldd in the image, and the image's dpkg for their packages.
    r = podman(*run, "--entrypoint", "/usr/bin/ldd", image, *binaries)
    libs = set()
    for line in r.stdout.splitlines():
        if "not found" in line:
            fail(f"ldd in the image: {line.strip()}")
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.add(m.group(1))
    if r.returncode != 0 and not problems:
        fail(f"ldd in the image exited {r.returncode}: {last_line(r.stderr)}")
    script = ('for l in "$@"; do r=$(readlink -f "$l"); for p in "$l" "$r" "${l#/usr}" "${r#/usr}" '
              '"/usr$l" "/usr$r"; do o=$(dpkg -S "$p" 2>/dev/null) && { echo "$l ${o%%:*}"; break; }; '
              'done; done')
    r = podman(*run, "--entrypoint", "/bin/sh", image, "-c", script, "sh", *sorted(libs))
    owners = dict(line.split(" ", 1) for line in r.stdout.splitlines() if " " in line)
    for lib in sorted(libs):
        owner = owners.get(lib)
        if owner is None:
            log(f"note: {lib} belongs to no package in the image")
        else:
            where = "runtime stage" if owner in pkgs else "base image"
            log(f"{os.path.basename(lib)} <- {owner} ({where})")
    for p in pkgs:
        if p not in owners.values():
            log(f"note: runtime package {p} provides no library the binaries load")

    # The config the ENTRYPOINT and CMD name, as COPYed into the image.
    if "--config" not in argv:
        fail(f"ENTRYPOINT + CMD {argv}: no --config")
        return
    config = argv[argv.index("--config") + 1]
    r = podman(*run, image, "check-config", config)
    if r.returncode != 0:
        fail(f"postern check-config {config} in the image: {r.stdout.strip()} {r.stderr.strip()}")
        return
    log(f"postern check-config {config}: ok")
    source = None
    for n, rest in words.get("COPY", []):
        opts, srcs, dest = copy_args(rest)
        if not opts and (dest == config or (dest.endswith("/") and
                                            dest + os.path.basename(srcs[-1]) == config)):
            source = os.path.join(root, srcs[-1])
    if source is None:
        fail(f"{config}: the runtime stage does not COPY it from the context")
        return
    run_relay(image, config, source, work, limits)


def address(text):
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    return ("127.0.0.1" if host in ("0.0.0.0", "", "::") else host), int(port)


def run_relay(image, config, source, work, limits):
    """The image's own command, with its config's route pointed at a sink in the container."""
    text = open(source).read()
    parsed = tomllib.loads(text)
    smtp = address(parsed["listener"][0]["address"])
    relay_cfg = os.path.join(work, "relay.toml")
    with open(relay_cfg, "w") as f:
        f.write(re.sub(r'(?m)^(\s*next_hop\s*=\s*)"[^"]*"', rf'\1"127.0.0.1:{SINK_PORT}"', text))
    name = f"postern-deploy-test-{os.getpid()}"
    start = time.monotonic()
    # Docker and Kubernetes (deploy/k8s) set ip_unprivileged_port_start=0 in a container's
    # network namespace; Podman does not, so it is set here as they do.
    r = podman("run", "-d", "--name", name, "--network", "none", "--read-only",
               "--sysctl", "net.ipv4.ip_unprivileged_port_start=0", *limits,
               "-v", f"{relay_cfg}:{config}:ro", image)
    if r.returncode != 0:
        fail(f"podman run {image}: {last_line(r.stderr)}")
        return
    try:
        relay_checks(name, smtp, start)
    finally:
        podman("rm", "-f", "-v", name, timeout=60)


def relay_checks(name, smtp, start):
    greeting, probe = None, (f"exec 3<>/dev/tcp/{smtp[0]}/{smtp[1]} && read -r -t 5 line <&3 "
                             f"&& printf '%s\\n' \"$line\" && printf 'QUIT\\r\\n' >&3")
    while time.monotonic() - start < 30:
        r = podman("exec", name, "bash", "-c", probe, timeout=15)
        if r.returncode == 0 and r.stdout.startswith("220"):
            greeting = r.stdout.strip()
            break
        state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
        if state != "running":
            break
        time.sleep(0.5)
    if greeting is None:
        logs = podman("logs", name)
        fail(f"no SMTP greeting on {smtp[0]}:{smtp[1]} in the container within 30 s: "
             f"{(logs.stdout + logs.stderr).strip()[-1500:]}")
        return
    log(f"SMTP greeting on {smtp[0]}:{smtp[1]} after {time.monotonic() - start:.1f} s: {greeting}")

    healthy = None
    for _ in range(20):
        healthy = podman("healthcheck", "run", name, timeout=30)
        if healthy.returncode == 0:
            break
        time.sleep(0.5)
    if healthy.returncode != 0:
        fail(f"the image's HEALTHCHECK fails on the running relay: {healthy.stdout.strip()} "
             f"{healthy.stderr.strip()}")
    else:
        log("HEALTHCHECK (podman healthcheck run): healthy")

    report = "/tmp/postern-sink.txt"  # --read-only keeps a tmpfs on /tmp
    sink = podman("exec", "-d", name, "postern-load", "sink", "--listen", f"127.0.0.1:{SINK_PORT}",
                  "--expect", str(MESSAGES), "--timeout", "60", "--quiet", "--report", report)
    if sink.returncode != 0:
        fail(f"postern-load sink in the container: {last_line(sink.stderr)}")
        return
    t0 = time.monotonic()
    src = podman("exec", name, "postern-load", "source", "--server", f"{smtp[0]}:{smtp[1]}",
                 "--messages", str(MESSAGES), "--concurrency", "4", "--quiet", "--timeout", "60",
                 timeout=90)
    result = last_line(src.stdout)
    if src.returncode != 0 or f"accepted={MESSAGES} " not in result:
        fail(f"postern-load source through the relay: exit {src.returncode}: {result} {src.stderr.strip()}")
    received = ""
    while time.monotonic() - t0 < 60:
        received = podman("exec", name, "cat", report).stdout.strip()
        if received:
            break
        time.sleep(0.5)
    want = f"received={MESSAGES} unique={MESSAGES} duplicates=0 corrupt=0"
    if want not in received:
        fail(f"sink after {MESSAGES} messages through the relay: {received or 'no report in 60 s'}")
    else:
        log(f"{MESSAGES} messages through the relay to the sink in {time.monotonic() - t0:.1f} s: "
            f"{received.split(' elapsed')[0]}")

    t0 = time.monotonic()
    stop = podman("stop", "-t", "30", name, timeout=60)
    code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    if stop.returncode != 0 or code != "0":
        fail(f"podman stop (SIGTERM): exit code {code} {last_line(stop.stderr)}")
    else:
        log(f"podman stop (SIGTERM): exit 0 after {time.monotonic() - t0:.1f} s")
    logs = podman("logs", name)
    lines = [line for line in (logs.stdout + logs.stderr).splitlines() if line.strip()]
    events = []
    for line in lines:
        try:
            events.append(json.loads(line).get("event"))
        except ValueError:
            fail(f"log line is not JSON (log_format = \"json\"): {line[:200]}")
            break
    if "stopped" not in events:
        fail(f"no `stopped` event in the relay's log (last: {lines[-1:] })")
    else:
        log(f"log: {len(lines)} JSON lines, the last event {events[-1]}")


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    root, work = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    os.makedirs(work, exist_ok=True)
    start = time.monotonic()
    with open(os.path.join(root, "deploy", "Dockerfile")) as f:
        st = stages(instructions(f.read()))
    words, pkgs = check_shape(st) if st else ({}, [])
    if "HEALTHCHECK" in words:
        healthcheck(words)
    skipped = None
    if not problems:
        skipped = why_not()
        limits = None
        if skipped is None and make_base(root):
            limits, error = ulimits()
            if limits is None:
                skipped = f"podman cannot start a container here: {error}"
        if skipped is None and limits:
            tag = "localhost/postern-deploy-test-" + hashlib.sha1(root.encode()).hexdigest()[:8]
            image = build(root, work, tag, limits)
            if image:
                check_image(image, words, pkgs, root, work, limits)
    for p in problems:
        print(f"FAIL deploy/Dockerfile: {p}", file=sys.stderr)
    took = time.monotonic() - start
    if problems:
        log(f"FAILED after {took:.1f} s")
        return 1
    if skipped:
        log(f"SKIPPED: the image was not built: {skipped}")
        return SKIP
    log(f"ok: image built and run, {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
