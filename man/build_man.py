#!/usr/bin/python3
"""build_man.py SRC OUT VERSION: the man pages, from the same text as the docs.

Each page is its head here (man/NAME.md: NAME, SYNOPSIS, what only a man page says)
followed by the documentation it shares with docs/, so that nothing is written twice:

  postern(8)        + docs/operations.md (running, signals, reload, admin, drain, upgrade)
  postern-queue(8)  + the queue tool of docs/operations.md (between its man: markers)
  postern.toml(5)   + docs/configuration.md and deploy/postern.toml, the reference file

The Markdown is then turned into roff by go-md2man, and gzipped for the package. A doc's "## Section" becomes a
section of the page, "### Sub" a subsection; its "# Title" is dropped.
"""
import datetime
import gzip
import os
import re
import subprocess
import sys


def body_of(path, marker=None):
    with open(path) as f:
        text = f.read()
    if marker:
        m = re.search(rf"<!-- man:{marker} -->\n(.*?)<!-- /man:{marker} -->", text, re.S)
        if not m:
            sys.exit(f"build_man: {path} has no man:{marker} markers")
        text = m.group(1)
    out = []
    for line in text.splitlines():
        if line.startswith("# "):
            continue
        if line.startswith("<!-- ") and line.endswith(" -->"):
            continue
        if line.startswith("## "):
            line = "# " + line[3:].upper()
        elif line.startswith("### "):
            line = "## " + line[4:]
        out.append(line)
    return "\n".join(out).strip() + "\n"


def dedent_list(text):
    """The docs' "* **Queue tool** ..." bullet, as plain paragraphs for a page of its own."""
    lines = text.splitlines()
    if lines and lines[0].startswith("* "):
        lines[0] = lines[0][2:]
        lines = [l[2:] if l.startswith("  ") else l for l in lines]
    return "\n".join(lines) + "\n"


def main():
    src, out, version = sys.argv[1], sys.argv[2], sys.argv[3]
    date = datetime.date.today().strftime("%B %Y")
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        date = datetime.datetime.utcfromtimestamp(int(epoch)).strftime("%B %Y")
    docs = os.path.join(src, "docs")
    with open(os.path.join(src, "deploy", "postern.toml")) as f:
        reference = f.read()
    pages = {
        "postern.8": [body_of(os.path.join(docs, "operations.md")),
                      "# SEE ALSO\n\n**postern-queue**(8), **postern.toml**(5)\n"],
        "postern-queue.8": ["# DESCRIPTION\n\n" + dedent_list(body_of(
                                os.path.join(docs, "operations.md"), "queue")),
                            "# SEE ALSO\n\n**postern**(8), **postern.toml**(5)\n"],
        "postern.toml.5": [body_of(os.path.join(docs, "configuration.md")),
                           "# THE REFERENCE FILE\n\n```toml\n" + reference + "```\n",
                           "# SEE ALSO\n\n**postern**(8), **postern-queue**(8)\n"],
    }
    os.makedirs(out, exist_ok=True)
    for name, parts in pages.items():
        with open(os.path.join(src, "man", name + ".md")) as f:
            head = f.read().replace("@DATE@", date).replace("@VERSION@", version)
        md = head.rstrip() + "\n\n" + "\n".join(parts)
        with open(os.path.join(out, name + ".md"), "w") as f:
            f.write(md)
        roff = subprocess.run(["go-md2man"], input=md, capture_output=True, text=True,
                              check=True).stdout
        with open(os.path.join(out, name), "w") as f:
            f.write(roff)
        # Compressed for the package (Debian policy), reproducibly: no name, no time.
        with open(os.path.join(out, name + ".gz"), "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                gz.write(roff.encode())


if __name__ == "__main__":
    main()
