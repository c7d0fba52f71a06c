"""Cold build vs. build from a warm registry (the build cache, docs/buildcache.md).

Usage:
  python bench/buildcache_bench.py                       # the tests' fixture distribution
  python bench/buildcache_bench.py --config config.yaml --dist base [-n 2] [--workdir DIR]
  ... [--registry http://HOST:PORT]     # an existing registry instead of a private one

Per round: (1) cold: an empty cache folder and an empty registry repository; `doit
assemble:<dist>` compiles every component of <dist> and of the distributions it uses
and pushes each; (2) warm: another empty cache folder, same registry: the same command
pulls everything. Sources are fetched before each timed run (not timed; the warm run
fetches from the cold run's downloads through a file:// mirror), so the times compare
compiling with pulling. Prints both times, the ratio and the engine's push/pull totals.

With --config, the configuration (and its config.local.yaml) is copied to a temporary
file with cache_dir, buildcache and mirrors replaced; the project's own cache/ is only
read (its downloads serve as a file:// mirror). Without --registry a private
docker-registry (Debian package docker-registry) runs on 127.0.0.1 for the benchmark.
"""
import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import yaml  # noqa: E402

from conftest import REPO, doit_env  # noqa: E402
from fixtures import demo_project  # noqa: E402
from registryfixture import RegistryServer, available  # noqa: E402


def project_config(args, root, cache_dir, url, repository, mirrors):
    """A config file for one run: the given project's (or the fixture's) settings with
    cache_dir, buildcache and mirrors of this run."""
    if args.config:
        from tasks.model.config import _deep_merge
        from tasks.model.recipes import read_yaml
        src = Path(args.config).resolve()
        data = read_yaml(src)
        if src.with_name("config.local.yaml").is_file():
            data = _deep_merge(data, read_yaml(src.with_name("config.local.yaml")))
        data["recipes_dir"] = str((src.parent / data.get("recipes_dir", "recipes")).resolve())
        base = src.parent
    else:
        data = yaml.safe_load((root / "fixture/config.yaml").read_text())
        data["recipes_dir"] = str(root / "fixture/recipes")
        base = root / "fixture"
    own = Path(base / data.get("cache_dir", "cache")).resolve() / "downloads"
    data["cache_dir"] = str(root / cache_dir)
    data["mirrors"] = [f"file://{m}" for m in mirrors] + (
        [f"file://{own}"] if own.is_dir() else []) + list(data.get("mirrors") or [])
    data["buildcache"] = {"url": url, "repository": repository, "mode": "read-write"}
    path = root / f"config-{cache_dir}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def doit(config, *argv, jobs=1):
    cmd = [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py")]
    cmd += (["-n", str(jobs)] if jobs > 1 else []) + list(argv)
    start = time.time()
    proc = subprocess.run(cmd, env=doit_env(config), capture_output=True, text=True)
    took = time.time() - start
    if proc.returncode != 0:
        sys.exit(f"doit {' '.join(argv)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}")
    return took, proc.stderr


def engine_totals(err):
    count = {w: len(re.findall(rf"^build:\S+: {w}", err, re.M))
             for w in ("building", "pulled from", "pushed to")}
    push = sum(float(s) for s in re.findall(r"^build:\S+: pushed to .* in ([\d.]+) s$", err, re.M))
    pull = sum(float(s) for s in re.findall(r"^build:\S+: pulled from .* in ([\d.]+) s$", err, re.M))
    warn = [line for line in err.splitlines() if line.startswith("warning:")]
    return count, push, pull, warn


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", help="a project's config.yaml (default: the tests' fixture)")
    ap.add_argument("--dist", default="demo", help="the distribution to build (default demo)")
    ap.add_argument("--registry", help="URL of an existing registry (default: a private one)")
    ap.add_argument("-n", type=int, default=1, dest="jobs", help="doit -n (builds at once)")
    ap.add_argument("--workdir", help="where caches and the private registry live "
                    "(default: a temporary folder, removed afterwards)")
    args = ap.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="dappdeps-cache-bench-"))
    if args.workdir:
        shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    if not args.config:
        demo_project(root / "fixture")
    server = None
    if args.registry:
        url = args.registry.rstrip("/")
    else:
        if not available():
            sys.exit("docker-registry is not installed (apt-get install docker-registry), "
                     "or pass --registry URL")
        server = RegistryServer(root / "registry").start()
        url = server.url
    repository = f"bench/run-{int(time.time())}"     # empty, even on a shared registry
    try:
        cold_cfg = project_config(args, root, "cold", url, repository, [])
        doit(cold_cfg, "fetch")
        cold, cold_err = doit(cold_cfg, f"assemble:{args.dist}", jobs=args.jobs)
        warm_cfg = project_config(args, root, "warm", url, repository, [root / "cold/downloads"])
        doit(warm_cfg, "fetch")
        warm, warm_err = doit(warm_cfg, f"assemble:{args.dist}", jobs=args.jobs)
    finally:
        if server:
            server.stop()
    c_count, c_push, _, c_warn = engine_totals(cold_err)
    w_count, _, w_pull, w_warn = engine_totals(warm_err)
    what = f"{args.config or 'fixture'} assemble:{args.dist}"
    print(f"{what}: registry {url}/{repository}")
    print(f"cold (empty cache and registry): {cold:7.1f} s  compiled {c_count['building']}, "
          f"pushed {c_count['pushed to']} (push total {c_push:.1f} s)")
    print(f"warm (empty cache, warm registry): {warm:5.1f} s  compiled {w_count['building']}, "
          f"pulled {w_count['pulled from']} (pull total {w_pull:.1f} s)")
    print(f"ratio cold/warm: {cold / warm:.1f}x")
    for line in c_warn + w_warn:
        print(line)
    if not args.workdir:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
