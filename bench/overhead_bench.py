"""Engine overhead for one real package: GNU sed through `doit` vs the same commands by hand.

Usage: python bench/overhead_bench.py path/to/sed-4.9.tar.xz [rounds]
(`doit fetch` puts Debian's sed orig in cache/downloads; any sed release works.)
Both sides unpack, configure, make -j2 and install into a fresh prefix; the engine
side adds the sandbox, overlay capture, manifest hashing and stamps.
"""
import hashlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import REPO, doit_env  # noqa: E402
from fixtures import FixtureProject  # noqa: E402

CONFIGURE = ["--disable-nls", "--without-selinux"]


def by_hand(tarball, work):
    subprocess.run(["rm", "-rf", str(work)], check=True)
    (work / "src").mkdir(parents=True)
    start = time.time()
    subprocess.run(["tar", "-xf", str(tarball), "-C", str(work / "src"), "--strip-components=1"], check=True)
    (work / "build").mkdir()
    sh = (f"cd {work}/build && {work}/src/configure --prefix={work}/prefix {' '.join(CONFIGURE)} "
          f"&& make -j2 && make install")
    # Same locale as the sandbox: configure under a UTF-8 locale is measurably slower.
    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": str(work)}
    subprocess.run(["bash", "-c", sh], check=True, capture_output=True, env=env)
    return time.time() - start


def engine(tarball, root):
    subprocess.run(["rm", "-rf", str(root)], check=True)
    proj = FixtureProject(root)
    sha = hashlib.sha256(Path(tarball).read_bytes()).hexdigest()
    proj.write_recipe({"name": "sed", "version": "4.9", "description": "GNU sed", "license": "GPL-3.0-or-later",
                       "sources": [{"file": Path(tarball).name, "sha256": sha, "urls": [Path(tarball).resolve().as_uri()]}],
                       "configure": CONFIGURE})
    proj.add_distribution("bench", ["sed"])
    config = proj.write_config()
    cmd = [sys.executable, "-m", "doit", "-f", str(REPO / "dodo.py")]
    subprocess.run(cmd + ["fetch"], env=doit_env(config), check=True, capture_output=True)
    start = time.time()
    subprocess.run(cmd + ["build:bench/sed"], env=doit_env(config), check=True, capture_output=True)
    return time.time() - start


def main():
    tarball = Path(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    tmp = Path(tempfile.mkdtemp(prefix="dappdeps-overhead-"))
    hand, eng = [], []
    for i in range(rounds):
        hand.append(by_hand(tarball, tmp / "hand"))
        eng.append(engine(tarball, tmp / "engine"))
        print(f"round {i + 1}: by hand {hand[-1]:.1f} s, engine {eng[-1]:.1f} s")
    h, e = statistics.median(hand), statistics.median(eng)
    print(f"median: by hand {h:.1f} s, engine {e:.1f} s, overhead {100 * (e - h) / h:+.1f} %")


if __name__ == "__main__":
    main()
