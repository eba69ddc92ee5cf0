#!/usr/bin/env python3
"""The Debian package (cmake/package.cmake) built, installed, run and removed.

    deb_package.py BUILD_DIR

* `cpack -G DEB` in BUILD_DIR makes the .deb; its control data must name the conffile
  and the shared libraries' packages, and it must hold what cmake/package.cmake says.
* It is installed with dpkg into a scratch root (`dpkg --root`, its own status
  database), so the machine's own packages are never touched; then what it installed
  runs: `postern --version`, `postern check-config` on the packaged configuration, and
  the relay started from that configuration (ports and spool moved to free ones) with the
  packaged postern-load as source and sink: 20 messages through.
* `dpkg -r` removes the binaries and keeps the edited conffile; `dpkg -P` removes it.
"""

import os
import re
import socket
import subprocess
import sys
import tempfile
import time

problems = []


def fail(msg):
    problems.append(msg)
    print("FAIL " + msg, flush=True)


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_package(build, out):
    r = run(["cpack", "-G", "DEB", "-B", out, "--config",
             os.path.join(build, "CPackConfig.cmake")])
    if r.returncode != 0:
        fail(f"cpack exited {r.returncode}: {r.stdout[-2000:]} {r.stderr[-2000:]}")
        return None
    debs = [f for f in os.listdir(out) if f.endswith(".deb")]
    if len(debs) != 1:
        fail(f"cpack made {debs}, expected one .deb")
        return None
    return os.path.join(out, debs[0])


def check_control(deb):
    info = run(["dpkg-deb", "--info", deb]).stdout
    for want in (r"Package: postern\b", r"Depends: .*libssl3", r"Depends: .*libuv1",
                 r"Section: mail"):
        if not re.search(want, info):
            fail(f"control: no {want!r} in:\n{info}")
    listing = run(["dpkg-deb", "-I", deb, "conffiles"]).stdout.split()
    if listing != ["/etc/postern/postern.toml"]:
        fail(f"conffiles: {listing}")
    contents = run(["dpkg-deb", "--contents", deb]).stdout
    for path in ("./usr/bin/postern", "./usr/bin/postern-load", "./etc/postern/postern.toml",
                 "./usr/lib/systemd/system/postern.service",
                 "./usr/share/doc/postern/copyright", "./usr/share/doc/postern/docs/operations.md",
                 "./usr/share/doc/postern/examples/inbound-mx.toml",
                 "./usr/share/man/man8/postern.8.gz", "./usr/share/man/man8/postern-queue.8.gz",
                 "./usr/share/man/man5/postern.toml.5.gz"):
        if not re.search(rf"\s{re.escape(path)}$", contents, re.M):
            fail(f"the package lacks {path}")
    print(f"package: {os.path.basename(deb)}, {os.path.getsize(deb) / 1e6:.2f} MB", flush=True)


def dpkg(root, *args):
    return run(["dpkg", f"--root={root}", f"--admindir={root}/var/lib/dpkg", "--log=/dev/null",
                "--force-not-root", "--force-script-chrootless", "--force-depends", *args])


def exercise(root, work):
    postern = os.path.join(root, "usr/bin/postern")
    load = os.path.join(root, "usr/bin/postern-load")
    conf = os.path.join(root, "etc/postern/postern.toml")
    r = run([postern, "--version"])
    if r.returncode != 0 or not r.stdout.startswith("postern "):
        fail(f"postern --version: {r.returncode} {r.stdout!r} {r.stderr!r}")
    print(r.stdout.strip(), flush=True)
    r = run([postern, "check-config", conf])
    if r.returncode != 0:
        fail(f"check-config on the packaged configuration: {r.stdout} {r.stderr}")
    unit = open(os.path.join(root, "usr/lib/systemd/system/postern.service")).read()
    for line in re.findall(r"^Exec\w+=(\S+)", unit, re.M):
        if line.startswith("/usr/bin/") and not os.path.exists(os.path.join(root, line[1:])):
            fail(f"the unit runs {line}, which the package does not install")
    if "/usr/local/" in unit:
        fail("the packaged unit still names /usr/local")

    # The packaged configuration, moved to free ports and a scratch spool.
    text = open(conf).read()
    relay_port, sink_port, admin_port = free_port(), free_port(), free_port()
    for old, new in (('"127.0.0.1:2525"', f'"127.0.0.1:{relay_port}"'),
                     ('"127.0.0.1:2526"', f'"127.0.0.1:{sink_port}"'),
                     ('"127.0.0.1:9025"', f'"127.0.0.1:{admin_port}"'),
                     ('"/var/spool/postern"', f'"{work}/spool"')):
        if old not in text:
            fail(f"the packaged configuration has no {old} any more: update this test")
        text = text.replace(old, new)
    moved = os.path.join(work, "postern.toml")
    with open(moved, "w") as f:
        f.write(text)
    sink = subprocess.Popen([load, "sink", "--listen", f"127.0.0.1:{sink_port}", "--expect", "20",
                             "--quiet", "--timeout", "60"], stdout=subprocess.PIPE, text=True)
    relay = subprocess.Popen([postern, "--config", moved], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", relay_port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        r = run([load, "source", "--server", f"127.0.0.1:{relay_port}", "--messages", "20",
                 "--concurrency", "2", "--quiet", "--timeout", "60"])
        if "accepted=20 " not in r.stdout:
            fail(f"postern-load source through the packaged relay: {r.stdout} {r.stderr}")
        out, _ = sink.communicate(timeout=90)
        if sink.returncode != 0 or "unique=20 " not in out:
            fail(f"the sink did not get the 20 messages: {sink.returncode} {out}")
        else:
            print("20 messages through the packaged relay", flush=True)
    finally:
        relay.terminate()
        _, err = relay.communicate(timeout=30)
        if relay.returncode != 0:
            fail(f"the packaged relay exited {relay.returncode} on SIGTERM: {err[-2000:]}")
        if sink.poll() is None:
            sink.kill()


def main():
    build = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory(prefix="postern-deb-") as work:
        deb = build_package(build, os.path.join(work, "out"))
        if deb is None:
            return 1
        check_control(deb)
        root = os.path.join(work, "root")
        for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers"):
            os.makedirs(os.path.join(root, d))
        open(os.path.join(root, "var/lib/dpkg/status"), "w").close()
        r = dpkg(root, "-i", deb)
        if r.returncode != 0:
            fail(f"dpkg -i: {r.stdout} {r.stderr}")
            return 1
        exercise(root, work)
        conf = os.path.join(root, "etc/postern/postern.toml")
        with open(conf, "a") as f:
            f.write("# edited by the operator\n")
        r = dpkg(root, "-r", "postern")
        if r.returncode != 0:
            fail(f"dpkg -r: {r.stdout} {r.stderr}")
        if os.path.exists(os.path.join(root, "usr/bin/postern")):
            fail("dpkg -r left /usr/bin/postern")
        if not os.path.exists(conf):
            fail("dpkg -r removed the edited conffile")
        r = dpkg(root, "-P", "postern")
        if r.returncode != 0 or os.path.exists(conf):
            fail(f"dpkg -P: {r.returncode} {r.stderr}; conffile left: {os.path.exists(conf)}")
    print(f"deb_package: {len(problems)} problem(s)", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
