"""What the benchmark scripts in bench/ share (e2e_bench.py, backlog.py, envelope_memory.py).

Processes they start and stop by PID (SIGTERM, then SIGKILL), postern-load's sink, free
loopback ports, the key=value fields of postern-load's result lines, readers of /proc
(VmRSS and the like, CPU time, the machine's busy share), and the few lines every main()
has. Imported by the scripts as a sibling module: Python puts a script's own directory
first on sys.path, so this works from any current directory.
"""

import os
import signal
import socket
import subprocess
import sys
import time

KIB = 1024
MIB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


def logger(prog):
    """log(msg) for a script: `prog: msg` on stderr."""

    def log(msg):
        print(f"{prog}: {msg}", file=sys.stderr, flush=True)

    return log


# ---------------------------------------------------------------------------- loopback


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepting(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(pred, timeout, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


# ---------------------------------------------------------------------------- result lines


def fields(line):
    """key=value pairs of a result line."""
    return dict(tok.split("=", 1) for tok in line.split() if "=" in tok)


def result_fields(text, prefix):
    """fields() of the line of text that starts with prefix (the last if several), {} if
    none: postern-load's `result ...` (source) and `sink received=...` (sink) lines."""
    out = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            out = fields(line)
    return out


def read_text(path):
    """The whole file, "" if it cannot be read."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


# ---------------------------------------------------------------------------- /proc


def status_kb(pid, key, missing=None):
    """The number of a /proc/PID/status line (VmRSS, VmHWM: kB; Threads); `missing` if
    the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return missing


def proc_stat(pid):
    """/proc/PID/stat split after the command name (rest[0] is field 3 of stat(5), the
    state), as bytes; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 :].split()


def cpu_ticks(pid, children=False):
    """utime+stime of pid (all its threads) in clock ticks; children=True adds
    cutime+cstime (its exited and reaped children). 0 if it is gone."""
    rest = proc_stat(pid)
    if rest is None:
        return 0
    # Fields 14-15 (and 16-17) of stat(5); rest starts at field 3.
    return sum(int(x) for x in rest[11 : 15 if children else 13])


def cpu_s(pid):
    """utime+stime of pid, all its threads, in seconds."""
    return cpu_ticks(pid) / CLK_TCK


def machine_snapshot():
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + vals[4]  # idle + iowait
    total = sum(vals[:8])
    return total - idle, total


def busy_pct(a, b):
    """Share of all cores busy between two machine_snapshot()s, in % of the machine."""
    busy, total = b[0] - a[0], b[1] - a[1]
    return 100.0 * busy / total if total > 0 else 0.0


# ---------------------------------------------------------------------------- processes


class StartFailed(RuntimeError):
    """A process started here did not come up."""


def terminate(proc, timeout, on_kill=None):
    """SIGTERM to a Popen and wait up to `timeout` s, then SIGKILL (calling on_kill()
    first). Seconds from the SIGTERM to the exit; None if it had exited already or had to
    be killed."""
    if proc.poll() is not None:
        return None
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
        return time.monotonic() - t
    except subprocess.TimeoutExpired:
        if on_kill:
            on_kill()
        proc.kill()
        proc.wait()
        return None


class Child:
    """A process started here, listed in `running` (the script's list of what to stop at
    the end) until stop(). `name` and `log`: a line when it has to be killed."""

    def __init__(self, running, argv, stdout, stderr, stop_timeout=10, name=None, log=None):
        self.running = running
        self.stop_timeout = stop_timeout
        self.name, self.log = name, log
        self.proc = subprocess.Popen(argv, stdout=stdout, stderr=stderr)
        self.pid = self.proc.pid
        running.append(self)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=None):
        """SIGTERM, then SIGKILL after `timeout` s (default stop_timeout); seconds it
        took, None if it had exited already or had to be killed."""
        timeout = self.stop_timeout if timeout is None else timeout
        on_kill = None
        if self.log:
            on_kill = lambda: self.log(  # noqa: E731
                f"{self.name} still running {timeout} s after SIGTERM; SIGKILL")
        took = terminate(self.proc, timeout, on_kill)
        if self in self.running:
            self.running.remove(self)
        return took


def stop_all(running, log):
    """Stops everything in `running`, the last started first."""
    while running:
        obj = running.pop()
        try:
            obj.stop()
        except Exception as e:  # keep stopping the others
            log(f"while stopping {obj}: {e}")


class Sink(Child):
    """`postern-load sink` on 127.0.0.1:port, its output in d/sink.out and d/sink.err;
    started when the constructor returns (it waits up to 10 s for `sink listening`)."""

    def __init__(self, running, load, d, port, expect, timeout):
        self.port = port
        self.expect = expect
        self.out_path = os.path.join(d, "sink.out")
        self.err_path = os.path.join(d, "sink.err")
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            super().__init__(running, [load, "sink", "--listen", f"127.0.0.1:{port}",
                                       "--expect", str(expect), "--timeout", str(timeout)],
                             out, err)
        if not wait_until(lambda: "sink listening" in read_text(self.out_path)
                          or self.proc.poll() is not None, 10):
            raise StartFailed("the sink did not start")
        if self.proc.poll() is not None:
            raise StartFailed("the sink exited: " + read_text(self.err_path)[-500:])

    def result(self):
        """The fields of its `sink received=` line, {} before it has written one."""
        return result_fields(read_text(self.out_path), "sink received=")


# ---------------------------------------------------------------------------- main


def check_build(build, prog):
    for exe in ("postern", "postern-load"):
        if not os.access(os.path.join(build, exe), os.X_OK):
            sys.exit(f"{prog}: {build}/{exe} not found (build first)")


def exit_on_signals():
    """SIGTERM and SIGHUP end the script as SystemExit(128 + signal number), so that its
    finally blocks stop what it started (SIGINT does that as KeyboardInterrupt)."""

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)


def write_report(md, path, log):
    """The Markdown report to `path` and to stdout."""
    with open(path, "w") as f:
        f.write(md)
    print(md, end="")
    log(f"wrote {path}")
