#!/usr/bin/env python3
"""Export throughput of tasks.ship.image.export_image against `tar -cf`, side by side.

Builds a distribution-like stage from host folders (default: /usr/lib/gcc, big files,
plus /usr/include, thousands of small headers: ~250 MB, ~8000 files), then times, on a
warm page cache and alternating the two, `tar -cf` of the component trees and
export_image of the same files (which also hashes the layer, writes the docker/OCI
metadata and streams a patched header), and the same layer written by Python's `tarfile`
through a file wrapper that hashes what passes (the alternative writer, issue 12).
Prints seconds, MB/s and the ratios.

    python bench/export_bench.py [--reps 5] [--workdir /tmp/dappdeps-bench] [--keep]
                                 [--source /usr/lib/gcc --source /usr/include] [--fsync]

--fsync also times both writers flushing to disk (export's default; tar then `sync FILE`).
"""
import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.core import files
from tasks.core import canonical
from tasks.build import manifest  # noqa: E402
from tasks.ship.image import export_image  # noqa: E402

DEFAULT_SOURCES = ["/usr/lib/gcc", "/usr/include"]


def build_stage(work, sources):
    """cache/stage/bench/<component>/tree/<relative host path> + merged manifest."""
    cache = work / "cache"
    stage = cache / "stage" / "bench"
    manifest_path = cache / "stage" / "bench.manifest.json"
    if manifest_path.is_file():
        return manifest_path, stage
    if stage.exists():
        shutil.rmtree(stage)
    layers, comps = [], []
    for i, src in enumerate(sources):
        name = f"c{i}-{Path(src).name}"
        tree = stage / name / "tree"
        dest = tree / src.strip("/").split("/", 1)[-1]
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", "--no-preserve=ownership", src, str(dest)], check=True)
        # drop what an installed tree would not hold (sockets, devices)
        entries = manifest.scan_tree(tree)
        layers.append((name, entries, set()))
        comps.append({"name": name, "version": "1", "license": "GPL-3.0-or-later",
                      "sources": [{"file": f"{name}.tar", "sha256": "0" * 64, "urls": []}]})
    doc = {"format": 1, "distribution": "bench", "version": "1.0",
           "prefix": "/.dapp/deps/bench/1.0", "components": comps,
           "entries": manifest.merge("bench", layers)}
    files.write_atomic(manifest_path, canonical.dumps(doc))
    return manifest_path, stage


def run_tar(stage, out, fsync):
    comps = sorted(p.name for p in stage.iterdir())
    args = ["tar", "-cf", str(out), "-C", str(stage)] + [f"{c}/tree" for c in comps]
    start = time.perf_counter()
    subprocess.run(args, check=True)
    if fsync:
        subprocess.run(["sync", str(out)], check=True)
    return time.perf_counter() - start


def run_export(manifest_path, stage, out, fsync):
    start = time.perf_counter()
    result = export_image(manifest_path, stage, out, "dappdeps/bench", "1.0",
                          source_date_epoch=1700000000, fsync=fsync)
    return time.perf_counter() - start, result


class _HashingFile:
    """A write-only file object that hashes what it writes (tarfile's output)."""

    def __init__(self, raw):
        self.raw, self.sha, self.size = raw, hashlib.sha256(), 0

    def write(self, data):
        self.sha.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def tell(self):
        return self.size


def run_tarfile(manifest_path, stage, out, fsync):
    """The layer alone (no outer tar: a lower bound of its cost), by tarfile + hashing."""
    start = time.perf_counter()
    doc = canonical.load(manifest_path)
    prefix = doc["prefix"].strip("/")
    with open(out, "wb") as raw:
        sink = _HashingFile(raw)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT,
                          copybufsize=1 << 20) as tar:
            for e in doc["entries"]:
                info = tarfile.TarInfo(f"{prefix}/{e['path']}")
                info.mtime, info.uname, info.gname = 1700000000, "", ""
                if e["type"] == "dir":
                    info.type, info.mode = tarfile.DIRTYPE, e["mode"]
                    tar.addfile(info)
                elif e["type"] == "symlink":
                    info.type, info.mode, info.linkname = tarfile.SYMTYPE, 0o777, e["target"]
                    tar.addfile(info)
                else:
                    info.mode, info.size = e["mode"], e["size"]
                    with open(stage / e["component"] / "tree" / e["path"], "rb") as fh:
                        tar.addfile(info, fh)
        sink.sha.hexdigest()
        if fsync:
            raw.flush()
            os.fsync(raw.fileno())
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="/tmp/dappdeps-bench")
    ap.add_argument("--source", action="append", help="host folder to copy (repeatable)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--fsync", action="store_true", help="also time flushing to disk")
    ap.add_argument("--keep", action="store_true", help="keep the stage for the next run")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    manifest_path, stage = build_stage(work, args.source or DEFAULT_SOURCES)
    doc = canonical.load(manifest_path)
    files = [e for e in doc["entries"] if e["type"] == "file"]
    total = sum(e["size"] for e in files)
    print(f"tree: {len(files)} files, {len(doc['entries'])} entries, {total / 1e6:.1f} MB "
          f"({', '.join(args.source or DEFAULT_SOURCES)}); python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cpus")
    out_tar, out_img, out_tf = work / "tar-cf.tar", work / "export.tar", work / "tarfile.tar"

    modes = [False] + ([True] if args.fsync else [])
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for fsync in modes:
        run_tar(stage, out_tar, fsync)                      # warm-up, both
        run_export(manifest_path, stage, out_img, fsync)
        run_tarfile(manifest_path, stage, out_tf, fsync)
        t_tar, t_exp, t_tf = [], [], []
        for _ in range(args.reps):
            for path in (out_tar, out_img, out_tf):
                path.unlink(missing_ok=True)
            t_tar.append(run_tar(stage, out_tar, fsync))
            seconds, result = run_export(manifest_path, stage, out_img, fsync)
            t_exp.append(seconds)
            t_tf.append(run_tarfile(manifest_path, stage, out_tf, fsync))
        tar_size, img_size = out_tar.stat().st_size, out_img.stat().st_size
        tf_size = out_tf.stat().st_size
        m_tar, m_exp = statistics.median(t_tar), statistics.median(t_exp)
        m_tf = statistics.median(t_tf)
        label = "with fsync" if fsync else "page cache"
        print(f"\n[{label}] median of {args.reps} (min..max)")
        print(f"  tar -cf      {m_tar:6.3f} s  ({min(t_tar):.3f}..{max(t_tar):.3f})  "
              f"{tar_size / m_tar / 1e6:7.1f} MB/s  {tar_size / 1e6:.1f} MB")
        print(f"  export_image {m_exp:6.3f} s  ({min(t_exp):.3f}..{max(t_exp):.3f})  "
              f"{img_size / m_exp / 1e6:7.1f} MB/s  {img_size / 1e6:.1f} MB  "
              f"digest {result['digest'][:19]}")
        print(f"  tarfile+sha  {m_tf:6.3f} s  ({min(t_tf):.3f}..{max(t_tf):.3f})  "
              f"{tf_size / m_tf / 1e6:7.1f} MB/s  {tf_size / 1e6:.1f} MB  (layer only)")
        print(f"  ratio (export throughput / tar throughput, bytes written per second): "
              f"{(img_size / m_exp) / (tar_size / m_tar):.2f}x")
        print(f"  ratio (export throughput / tarfile+sha throughput): "
              f"{(img_size / m_exp) / (tf_size / m_tf):.2f}x")
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"\npeak RSS of this process: {rss_after / 1024:.0f} MB "
          f"(grew {(rss_after - rss_before) / 1024:.0f} MB during {len(modes) * (args.reps + 1)} "
          f"exports of {total / 1e6:.0f} MB)")
    for path in (out_tar, out_img, out_tf):
        path.unlink(missing_ok=True)
    if not args.keep:
        shutil.rmtree(work / "cache")


if __name__ == "__main__":
    main()
