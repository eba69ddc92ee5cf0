"""The include rules of docs/architecture.md, checked: every quoted #include in a source
folder must name a folder that folder may see. core <- queue <- relay/routing <- {inbound,
outbound} <- relay; inbound and outbound never include each other; bench sees core and
queue only. Exits 1 and names every include that breaks a rule."""
import pathlib
import re
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
BELOW = {
    "core": {"core"},
    "queue": {"core", "queue"},
    "relay/routing": {"core", "queue", "relay/routing"},
    "relay/inbound": {"core", "queue", "relay/routing", "relay/inbound"},
    "relay/outbound": {"core", "queue", "relay/routing", "relay/outbound"},
    "relay": {"core", "queue", "relay/routing", "relay/inbound", "relay/outbound", "relay"},
    "bench": {"core", "queue", "bench"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def folder_of(path: str) -> str:
    parts = path.split("/")
    if parts[0] == "relay" and len(parts) > 2:
        return "relay/" + parts[1]
    return parts[0]


def main() -> int:
    broken = []
    checked = 0
    for folder, allowed in BELOW.items():
        base = ROOT / folder
        files = [p for p in base.iterdir() if p.suffix in (".h", ".cc")]
        for p in sorted(files):
            for target in INCLUDE.findall(p.read_text()):
                checked += 1
                if "/" not in target:
                    broken.append(f"{p.relative_to(ROOT)}: \"{target}\" is not a rooted path")
                elif folder_of(target) not in allowed:
                    broken.append(f"{p.relative_to(ROOT)}: includes {target}")
    for line in broken:
        print(line)
    print(f"{checked} includes checked, {len(broken)} against the layering")
    return 1 if broken or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
