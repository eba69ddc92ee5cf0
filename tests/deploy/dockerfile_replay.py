#!/usr/bin/python3
"""dockerfile_replay.py ROOT WORK_DIR: replays deploy/Dockerfile without a Docker engine.

The machine has no Docker engine, so the image cannot be built here. Instead:

1. Parse deploy/Dockerfile (line continuations, comments, exec and shell forms) and
   check its shape: a `build` stage and a final stage, both FROM debian:12-slim; the
   final stage installs no -dev or build packages, runs as a numeric non-root USER,
   declares the spool VOLUME, EXPOSEs 25 and 9025, has a HEALTHCHECK and an exec-form
   ENTRYPOINT.
2. Replay the build stage in a fresh directory WORK_DIR/replay: the build context is
   the files git would archive (tracked, plus untracked files that are not ignored) as
   they are in the working tree, minus .dockerignore's patterns; ARG defaults become
   the environment; WORKDIR maps into WORK_DIR/replay/fs; COPY copies from the context;
   RUN runs with /bin/sh -c. An `apt-get install` line is not run when every package it
   names is installed already (otherwise those packages are installed with apt-get);
   the other RUN lines must use relative paths only. Compiles go through ccache
   (WORK_DIR/ccache, kept between runs), which changes the time, not the result.
3. Check the final stage against what the build produced: every COPY --from=build
   source exists; the binaries run (`postern --help`, `postern-load --help`); the
   ENTRYPOINT + CMD config passes `postern check-config` (the file the image COPYs);
   every shared library `ldd` lists for the copied binaries belongs (dpkg -S) to a
   package the final stage installs, or to the base image (the Essential and
   Priority: required packages and their dependencies, which debian:12-slim is made
   of); and the HEALTHCHECK command passes against a stub answering 200 on /healthz
   and fails against 503, a closed port and a silent server.
Exit status 1 with one FAIL line per problem; the replay's log is printed on failure.
"""
import http.server
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time

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


# ---- the build context ----------------------------------------------------------------------

def dockerignore(root):
    path = os.path.join(root, ".dockerignore")
    rules = []
    if os.path.exists(path):
        for line in open(path):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pat = line.lstrip("!").strip("/")
            rx = re.escape(pat).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
            rx = rx.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
            rules.append((re.compile(rx + r"(?:/.*)?\Z"), negate))
    return rules


def ignored(rel, rules):
    result = False
    for rx, negate in rules:
        if rx.match(rel):
            result = not negate
    return result


def make_context(root, dest):
    files = subprocess.run(["git", "-C", root, "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], check=True, capture_output=True).stdout
    rules = dockerignore(root)
    count = 0
    for rel in sorted(set(files.decode().split("\0")) - {""}):
        src = os.path.join(root, rel)
        if ignored(rel, rules) or not os.path.lexists(src):
            continue
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, rel), follow_symlinks=False)
        count += 1
    return count


# ---- replaying the build stage -------------------------------------------------------------

def installed(pkg):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


def replay_build(stage, root, work):
    replay = os.path.join(work, "replay")
    fs = os.path.join(replay, "fs")
    context = os.path.join(replay, "context")
    shutil.rmtree(replay, ignore_errors=True)
    os.makedirs(fs)
    os.makedirs(context)
    log(f"context: {make_context(root, context)} files (git's file list minus .dockerignore)")
    ccache = os.path.join(work, "ccache")
    env = dict(os.environ, CCACHE_DIR=ccache, CCACHE_BASEDIR=replay, CCACHE_MAXSIZE="2G")
    if shutil.which("ccache"):
        env["CMAKE_C_COMPILER_LAUNCHER"] = env["CMAKE_CXX_COMPILER_LAUNCHER"] = "ccache"
    cwd = fs

    def mapped(path):
        return os.path.join(fs, path.lstrip("/")) if path.startswith("/") else os.path.join(cwd, path)

    for n, word, rest in stage["steps"]:
        if word == "ARG":
            name, _, default = rest.partition("=")
            if default and name not in env:
                env[name] = default
        elif word == "ENV":
            for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', rest):
                env[k] = v.strip('"')
        elif word == "WORKDIR":
            cwd = mapped(rest)
            os.makedirs(cwd, exist_ok=True)
        elif word == "COPY":
            opts, srcs, dest = copy_args(rest)
            if opts:
                fail(f"line {n}: COPY {opts} in the build stage is not replayed")
                continue
            target = mapped(dest)
            for src in srcs:
                src_path = os.path.normpath(os.path.join(context, src))
                if os.path.isdir(src_path):
                    shutil.copytree(src_path, target, symlinks=True, dirs_exist_ok=True)
                else:
                    os.makedirs(os.path.dirname(target.rstrip("/")) or ".", exist_ok=True)
                    shutil.copy2(src_path, target)
        elif word == "RUN":
            cmd = rest
            pkgs = apt_packages(cmd)
            if pkgs:
                missing = [p for p in pkgs if not installed(p)]
                if not missing:
                    log(f"line {n}: RUN apt-get ... skipped: all {len(pkgs)} packages are installed")
                    continue
                log(f"line {n}: installing {' '.join(missing)}")
                subprocess.run(["apt-get", "update", "-q"], check=False)
                r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing])
                if r.returncode != 0:
                    fail(f"line {n}: apt-get install {' '.join(missing)} failed")
                continue
            if re.search(r"(?:^|[\s=])/(?!dev/null)", cmd):
                fail(f"line {n}: RUN uses an absolute path; keep build-stage commands relative to WORKDIR")
                continue
            log(f"line {n}: RUN {cmd}")
            start = time.monotonic()
            r = subprocess.run(["/bin/sh", "-c", cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
            log(f"line {n}: exit {r.returncode} after {time.monotonic() - start:.1f} s")
            if r.returncode != 0:
                print(r.stdout[-6000:])
                fail(f"line {n}: RUN exited {r.returncode}")
                return None
        else:
            fail(f"line {n}: {word} in the build stage is not replayed; extend {sys.argv[0]}")
    return fs, context


# ---- checking the runtime stage --------------------------------------------------------------

def dpkg_owner(lib):
    candidates = [lib, os.path.realpath(lib)]
    for p in list(candidates):
        candidates.append(p[4:] if p.startswith("/usr/") else "/usr" + p)
    for p in candidates:
        r = subprocess.run(["dpkg", "-S", p], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":")[0].strip()
    return None


def base_packages():
    """Essential and Priority: required packages plus their dependency closure."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package}\t${Essential}\t${Priority}\t"
                          "${Pre-Depends}, ${Depends}\t${Provides}\n"],
                         capture_output=True, text=True).stdout
    deps, provides, todo = {}, {}, []
    for line in out.splitlines():
        name, essential, priority, depends, prov = (line.split("\t") + [""] * 5)[:5]
        deps[name] = [alt.split("|")[0].split("(")[0].split(":")[0].strip()
                      for alt in depends.split(",") if alt.strip()]
        for p in prov.split(","):
            if p.strip():
                provides.setdefault(p.split("(")[0].strip(), name)
        if essential == "yes" or priority == "required":
            todo.append(name)
    seen = set()
    while todo:
        p = todo.pop()
        p = p if p in deps else provides.get(p, p)
        if p in seen:
            continue
        seen.add(p)
        todo.extend(deps.get(p, []))
    return seen


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


def check_runtime(words, pkgs, fs, context):
    binaries, files = {}, {}
    for n, rest in words.get("COPY", []):
        opts, srcs, dest = copy_args(rest)
        for src in srcs:
            if opts.get("from") == "build":
                path = os.path.join(fs, src.lstrip("/"))
                name = dest.rstrip("/") + "/" + os.path.basename(src) if dest.endswith("/") else dest
                if not os.path.isfile(path):
                    fail(f"line {n}: COPY --from=build {src}: the build stage did not produce it")
                else:
                    binaries[name] = path
            elif not opts:
                name = dest.rstrip("/") + "/" + os.path.basename(src) if dest.endswith("/") else dest
                files[name] = os.path.join(context, src)
    entry = json.loads(words["ENTRYPOINT"][-1][1])
    cmd = exec_form(words["CMD"][-1][1]) if "CMD" in words else []
    argv = entry + cmd
    postern = binaries.get(argv[0])
    if postern is None:
        fail(f"ENTRYPOINT {argv[0]} is not a binary copied from the build stage")
        return
    for name, path in binaries.items():
        r = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            fail(f"{name} --help exited {r.returncode}: {r.stderr.strip()}")
        else:
            log(f"{name} --help: ok")
    if "--config" in argv:
        cfg = argv[argv.index("--config") + 1]
        if cfg not in files:
            fail(f"CMD --config {cfg}: the runtime stage does not COPY that file")
        else:
            r = subprocess.run([postern, "check-config", files[cfg]], capture_output=True, text=True)
            if r.returncode != 0:
                fail(f"postern check-config {cfg}: {r.stderr.strip()}")
            else:
                log(f"postern check-config {cfg} (from {os.path.relpath(files[cfg], context)}): ok")
    base = base_packages()
    for p in pkgs:
        if not installed(p) and subprocess.run(["apt-cache", "show", p], capture_output=True).returncode != 0:
            fail(f"runtime stage installs {p}, which Debian does not know")
    used = set()
    for name, path in binaries.items():
        out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if "not found" in line:
                fail(f"{name}: {line.strip()}")
                continue
            m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
            if not m:
                continue  # linux-vdso
            lib = m.group(1)
            owner = dpkg_owner(lib)
            used.add(owner)
            if owner is None:
                fail(f"{name}: {lib} belongs to no Debian package")
            elif owner in pkgs:
                log(f"{name}: {os.path.basename(lib)} <- {owner} (installed by the runtime stage)")
            elif owner in base:
                log(f"{name}: {os.path.basename(lib)} <- {owner} (in the base image)")
            else:
                fail(f"{name} needs {lib} from package {owner}, which the runtime stage does not install")
    for p in pkgs:
        if p not in used:
            log(f"note: runtime package {p} provides no library the binaries load")
    healthcheck(words)


def main():
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    root, work = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    os.makedirs(work, exist_ok=True)
    start = time.monotonic()
    with open(os.path.join(root, "deploy", "Dockerfile")) as f:
        st = stages(instructions(f.read()))
    if st:
        words, pkgs = check_shape(st)
        built = replay_build(st[0], root, work) if not problems else None
        if built:
            check_runtime(words, pkgs, *built)
    for p in problems:
        print(f"FAIL deploy/Dockerfile: {p}", file=sys.stderr)
    log(f"{'FAILED' if problems else 'ok'} after {time.monotonic() - start:.1f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
