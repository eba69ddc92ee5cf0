#!/usr/bin/python3
"""Envelope memory under a crowd: N sessions each try to hold 1,000 recipients of about
2 KB (the issue's 20,000 x 1,000 x 2 KB would be 40 GB without a bound). Prints the
relay's RSS before and at the peak, how many recipients it accepted and how many sessions
got 452 4.3.1 from [limits] memory_budget.

    bench/envelope_memory.py build/postern [--sessions 19000] [--budget 268435456]

Every session pipelines RCPTs in batches of 100 and stops at its first 452 (a real
client would), so the bytes sent stay near the budget. Loopback only; bounded in
sessions and in time (--timeout). 19,000 by default: this machine's hard limit on open
files is 20,000 per process, for the relay and this client alike."""

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time

from benchlib import accepting, free_port, status_kb, terminate, wait_until


async def read_replies(reader, n):
    codes = []
    while len(codes) < n:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            codes.append(int(line[:3]))
    return codes


async def session(i, port, rcpts, hold, stats):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await read_replies(reader, 1)
        writer.write(b"EHLO crowd.test\r\nMAIL FROM:<crowd%d@origin.test>\r\n" % i)
        codes = await read_replies(reader, 2)
        if codes[1] != 250:
            stats["mail_452" if codes[1] == 452 else "mail_other"] += 1
        else:
            local = b"r" * 1990
            sent = 0
            while sent < rcpts:
                batch = b"".join(b"RCPT TO:<%s%d.%d@dest.test>\r\n" % (local, i, sent + k)
                                 for k in range(100))
                writer.write(batch)
                codes = await read_replies(reader, 100)
                sent += 100
                stats["accepted"] += codes.count(250)
                if 452 in codes:
                    stats["rcpt_452_sessions"] += 1
                    break
        stats["ready"] += 1
        await hold.wait()
        writer.write(b"QUIT\r\n")
        await writer.drain()
    except (ConnectionError, OSError):
        stats["errors"] += 1
    finally:
        writer.close()


async def crowd(port, pid, sessions, rcpts, timeout):
    stats = dict(accepted=0, rcpt_452_sessions=0, mail_452=0, mail_other=0, ready=0, errors=0)
    hold = asyncio.Event()
    tasks = []
    for i in range(sessions):
        tasks.append(asyncio.create_task(session(i, port, rcpts, hold, stats)))
        if i % 500 == 499:
            await asyncio.sleep(0.05)  # the accept queue
    deadline = time.monotonic() + timeout
    while stats["ready"] + stats["errors"] < sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    peak = status_kb(pid, "VmRSS")
    hold.set()
    await asyncio.wait(tasks, timeout=60)
    return stats, peak


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("postern")
    ap.add_argument("--sessions", type=int, default=19000)
    ap.add_argument("--recipients", type=int, default=1000)
    ap.add_argument("--budget", type=int, default=256 << 20)
    ap.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    tmp = tempfile.mkdtemp(prefix="postern-crowd-")
    port, admin, sink = free_port(), free_port(), free_port()
    conf = os.path.join(tmp, "postern.toml")
    with open(conf, "w") as f:
        f.write(f'[server]\nworkers = 2\nspool_dir = "{tmp}/spool"\n'
                f'[[listener]]\naddress = "127.0.0.1:{port}"\n'
                f'[[route]]\ndomain = "*"\nnext_hop = "127.0.0.1:{sink}"\n'
                f'[admin]\naddress = "127.0.0.1:{admin}"\n'
                f'[limits]\nconnections = 20000\nconnections_per_ip = 20000\n'
                f'memory_budget = {a.budget}\n')
    relay = subprocess.Popen([a.postern, "--config", conf], stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: accepting(port), 5)
        time.sleep(0.3)
        before = status_kb(relay.pid, "VmRSS")
        t0 = time.monotonic()
        stats, peak = asyncio.run(crowd(port, relay.pid, a.sessions, a.recipients, a.timeout))
        wanted = a.sessions * a.recipients * 2040
        print(f"sessions={a.sessions} recipients_each={a.recipients} "
              f"(unbounded: {wanted / (1 << 30):.1f} GiB of envelopes) "
              f"memory_budget={a.budget >> 20} MiB")
        print(f"accepted_recipients={stats['accepted']} "
              f"sessions_refused_at_rcpt_452={stats['rcpt_452_sessions']} "
              f"sessions_refused_at_mail_452={stats['mail_452']} errors={stats['errors']}")
        print(f"relay_rss_before={before / 1024:.1f} MiB relay_rss_peak={peak / 1024:.1f} MiB "
              f"growth={(peak - before) / 1024:.1f} MiB elapsed={time.monotonic() - t0:.1f} s")
    finally:
        terminate(relay, 30)
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    sys.exit(main())
