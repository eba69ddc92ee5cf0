#!/usr/bin/python3
"""man_check.py SRC MAN_DIR: the man pages man/CMakeLists.txt made (ctest `man`).

* groff renders each with its man macros and every warning on, and says nothing but
  that a table is wider than 80 columns (the docs' tables are);
* the rendered page has its title line, NAME and SEE ALSO, and its gzipped copy (the
  package's) holds the same roff;
* each page holds the docs it is made from: every section heading of docs/operations.md
  in postern(8), every command of the queue tool's table in postern-queue(8), every
  section of docs/configuration.md and every table of deploy/postern.toml in
  postern.toml(5). A page that stopped following its docs fails here.
"""
import gzip
import os
import re
import subprocess
import sys

src, man = sys.argv[1], sys.argv[2]
problems = []


def render(name):
    path = os.path.join(man, name)
    if not os.path.exists(path):
        problems.append(f"{name}: not built")
        return ""
    with open(path) as f:
        roff = f.read()
    with gzip.open(path + ".gz", "rt") as f:
        if f.read() != roff:
            problems.append(f"{name}.gz differs from {name}")
    r = subprocess.run(["groff", "-man", "-ww", "-Tutf8", "-rLL=80n", path],
                       capture_output=True, text=True, env={**os.environ, "LC_ALL": "C.UTF-8"})
    noise = [l for l in r.stderr.splitlines()
             if l.strip() and "table wider than line width" not in l
             and not re.match(r"^(groff: )?warning: file '.*', around line \d+:$", l)]
    if r.returncode != 0 or noise:
        problems.append(f"{name}: groff: {r.returncode} {noise}")
    text = re.sub(r".\x08", "", r.stdout)  # overstrikes (bold, underline) to plain text
    title = name.rsplit(".", 1)
    if not re.search(rf"^{re.escape(title[0].upper())}\({title[1]}\)", text, re.M):
        problems.append(f"{name}: no title line")
    for section in ("NAME", "SEE ALSO"):
        if not re.search(rf"^{section}$", text, re.M):
            problems.append(f"{name}: no {section}")
    return re.sub(r"\s+", " ", text)


def must_hold(name, text, wanted, what):
    for w in wanted:
        if re.sub(r"\s+", " ", w) not in text:
            problems.append(f"{name}: lacks {what} {w!r}")


def headings(path):
    with open(path) as f:
        return [l[3:].strip().upper() for l in f if l.startswith("## ")]


page = render("postern.8")
must_hold("postern.8", page, headings(os.path.join(src, "docs", "operations.md")),
          "the docs/operations.md section")
page = render("postern-queue.8")
with open(os.path.join(src, "docs", "operations.md")) as f:
    ops = f.read()
commands = re.findall(r"^\s*\| `([a-z]+)", ops.split("<!-- man:queue -->")[1]
                      .split("<!-- /man:queue -->")[0], re.M)
if len(commands) < 8:
    problems.append(f"docs/operations.md: the queue table has {len(commands)} commands")
must_hold("postern-queue.8", page, set(commands) - {"command"}, "the queue command")
page = render("postern.toml.5")
must_hold("postern.toml.5", page, headings(os.path.join(src, "docs", "configuration.md")),
          "the docs/configuration.md section")
with open(os.path.join(src, "deploy", "postern.toml")) as f:
    tables = set(re.findall(r"^#? ?\[\[?[a-z_]+\]\]?", f.read(), re.M))
must_hold("postern.toml.5", page, {t.lstrip("# ") for t in tables}, "the table")

for p in problems:
    print("FAIL", p)
print(f"man_check: 3 pages, {len(problems)} problem(s)")
sys.exit(1 if problems else 0)
