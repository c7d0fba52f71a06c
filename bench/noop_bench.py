"""No-op `doit` over N generated components (target: under 2 s for 200).

Usage: python bench/noop_bench.py [N] [workdir]
Builds N tiny components once (each depends on up to 3 earlier ones), then times
three consecutive no-op runs of the full pipeline.
"""
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import REPO, doit_env  # noqa: E402
from fixtures import FixtureProject  # noqa: E402


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    root = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/dappdeps-noop-bench")
    subprocess.run(["rm", "-rf", str(root)], check=True)
    proj = FixtureProject(root)
    rng = random.Random(42)
    names = []
    sha = None
    for i in range(count):
        name = f"c{i:04d}"
        deps = rng.sample(names, min(len(names), rng.randint(0, 3)))
        files = {"Makefile": f"all:\ninstall:\n\tmkdir -p $(PREFIX)/share && echo {name} > $(PREFIX)/share/{name}\n"}
        if sha is None:
            sha = proj.add_package("pkg", "1.0", files)
            src = proj.recipes.pop("pkg")["sources"]
            (proj.root / "recipes" / "pkg.yaml").unlink()
        proj.write_recipe({"name": name, "version": "1.0", "description": "bench", "license": "MIT",
                           "sources": src, "depends": deps, "build": "script",
                           "script": f"mkdir -p $PREFIX/share && echo {name} > $PREFIX/share/{name}\n"})
        names.append(name)
    proj.add_distribution("bench", names)
    config = proj.write_config()
    cmd = [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py")]
    start = time.time()
    subprocess.run(cmd + ["-n", "2"], env=doit_env(config), check=True, capture_output=True)
    print(f"cold build of {count} components: {time.time() - start:.1f} s")
    for run in range(3):
        start = time.time()
        out = subprocess.run(cmd, env=doit_env(config), check=True, capture_output=True, text=True)
        ran = sum(1 for line in out.stdout.splitlines() if line.startswith(".  "))
        print(f"no-op run {run + 1}: {time.time() - start:.2f} s ({ran} tasks executed)")


if __name__ == "__main__":
    main()
