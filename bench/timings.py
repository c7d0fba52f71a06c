"""Build times and sizes of what is built, as Markdown tables (for docs/*.md).

Reads what the engine recorded: cache/stage/<dist>/<component>/build.json (seconds of
the last real build, jobs) and the assembled manifests (file sizes); images from
cache/images/<name>-<version>.json. SBU = seconds / the SBU measured by bench/sbu.sh.

    .venv/bin/python bench/timings.py [--sbu 103] [dist ...]
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tasks.model.project import project  # noqa: E402


def mb(n):
    return f"{n / 1e6:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sbu", type=float, default=103.0, help="seconds per SBU (bench/sbu.sh)")
    parser.add_argument("dists", nargs="*")
    args = parser.parse_args()
    cfg = project
    names = args.dists or [d.name for d in cfg.distributions.values() if d.default]
    grand = 0.0
    for name in names:
        dist = cfg.distributions[name]
        print(f"\n### {name} {dist.version}\n")
        print("| component | version | build (min) | SBU | files | size (MB) |")
        print("|---|---|---:|---:|---:|---:|")
        total = 0.0
        for comp in dist.components:
            stage = cfg.cache / "stage" / name / comp
            try:
                seconds = json.loads((stage / "build.json").read_text())["seconds"]
                entries = json.loads((stage / "manifest.json").read_text())["entries"]
            except (OSError, ValueError, KeyError):
                print(f"| {comp} | {cfg.recipes[comp].version} | not built | | | |")
                continue
            files = [e for e in entries if e["type"] == "file"]
            total += seconds
            print(f"| {comp} | {cfg.recipes[comp].version} | {seconds / 60:.1f} | "
                  f"{seconds / args.sbu:.2f} | {len(files)} | {mb(sum(e.get('size', 0) for e in files))} |")
        grand += total
        print(f"| **{name}** | | **{total / 60:.1f}** | **{total / args.sbu:.1f}** | | |")
        for image in dist.images:
            path = cfg.cache / "images" / f"{image}-{dist.version}.json"
            if path.is_file():
                result = json.loads(path.read_text())
                print(f"\nimage {result['ref']}: {result['files']} files, "
                      f"{mb(result['size'])} MB (tar)")
    print(f"\nAll of {', '.join(names)}: {grand / 60:.1f} min = {grand / args.sbu:.1f} SBU "
          f"(1 SBU = {args.sbu:.0f} s)")


if __name__ == "__main__":
    main()
