#!/usr/bin/env python3
"""docs/logs.md and docs/metrics.md against the code: every log event the relay writes and
every /metrics family it serves is listed there, and nothing listed there is gone; and
every configuration key core/config.cc reads is explained in deploy/postern.toml, the
reference docs/configuration.md points to.

    tests/docs_check.py REPO_ROOT

Events are read from the logEvent(...) and Session::log(...) calls in core/, queue/ and
relay/ (the event is the call's second argument, a string literal or a choice of two);
families from relay/admin.cc's kFamilies. The documented names are the first cells of the
pages' tables."""

import os
import re
import sys

CALL = re.compile(r"(?<![A-Za-z_])(?:logEvent|log)\(\s*[^;]*?spdlog::level::\w+[^,]*,")


def events(root):
    found = {}
    for d in ("core", "queue", "relay"):
        for dirpath, _, files in os.walk(os.path.join(root, d)):
            for name in files:
                if not name.endswith(".cc"):
                    continue
                path = os.path.join(dirpath, name)
                text = open(path, encoding="utf-8").read()
                for m in CALL.finditer(text):
                    depth, j = 0, m.end()
                    while j < len(text):  # the event argument ends at a comma or ')'
                        c = text[j]
                        if c in "([{":
                            depth += 1
                        elif c in ")]}":
                            if depth == 0:
                                break
                            depth -= 1
                        elif c == "," and depth == 0:
                            break
                        j += 1
                    for event in re.findall(r'"([a-z_]+)"', text[m.end():j]):
                        found.setdefault(event, os.path.relpath(path, root))
    return found


def families(root):
    text = open(os.path.join(root, "relay", "admin.cc"), encoding="utf-8").read()
    block = text[text.index("kFamilies[]"):]
    block = block[:block.index("};")]
    return set(re.findall(r'\{"([a-z_]+)", "(?:counter|gauge|histogram)"', block))


def config_keys(root):
    text = open(os.path.join(root, "core", "config.cc"), encoding="utf-8").read()
    return set(re.findall(r'\br\.[a-zA-Z_]+\("([a-z_]+)"', text))


def documented(path):
    rows = re.findall(r"^\| `([a-z_]+)` \|", open(path, encoding="utf-8").read(), re.M)
    return set(rows)


def compare(what, code, page, problems):
    for name in sorted(set(code) - page):
        where = f" ({code[name]})" if isinstance(code, dict) else ""
        problems.append(f"{what}: {name}{where} is not in the page")
    for name in sorted(page - set(code)):
        problems.append(f"{what}: {name} is in the page but not in the code")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    problems = []
    code_events = events(root)
    if len(code_events) < 20:
        problems.append(f"only {len(code_events)} log events found: the extraction broke")
    compare("docs/logs.md", code_events, documented(os.path.join(root, "docs", "logs.md")),
            problems)
    code_families = families(root)
    if len(code_families) < 10:
        problems.append(f"only {len(code_families)} metric families found: the extraction broke")
    compare("docs/metrics.md", code_families,
            documented(os.path.join(root, "docs", "metrics.md")), problems)
    keys = config_keys(root)
    if len(keys) < 30:
        problems.append(f"only {len(keys)} configuration keys found: the extraction broke")
    reference = open(os.path.join(root, "deploy", "postern.toml"), encoding="utf-8").read()
    for key in sorted(keys):
        if not re.search(rf"(?<![a-z_]){key}(?![a-z_])", reference):
            problems.append(f"deploy/postern.toml: configuration key {key} is not explained")
    for p in problems:
        print("FAIL " + p)
    print(f"docs_check: {len(code_events)} events, {len(code_families)} families, "
          f"{len(keys)} configuration keys, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
