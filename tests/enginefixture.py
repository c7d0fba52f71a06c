"""Fixtures for image export and container-engine tests.

make_stage()      a fake cache/stage/<dist>/<component>/tree + merged manifest, as the
                  assemble task writes them (tasks.build.manifest.scan_tree / merge / dumps)
static_programs() a static C program (gcc -static) and Debian's static busybox
rootfs_image()    a one-layer docker-archive from a dict of files (no daemon involved):
                  a busybox image from busybox-static, and an empty `scratch` image
ENGINES, engine() the engines the tests run against, both in CI: Podman's Docker API and a
                  private dockerd (.ci/podman.sh, .ci/docker.sh, both started by ./setup);
                  engine(name) is a docker SDK client of one of them. An engine that does
                  not answer is started once by its .ci script (as root), else the test
                  FAILS telling to run ./setup: no skip hides a missing engine.
"""
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tasks.core import canonical
from tasks.core.files import write_atomic
from tasks.build import manifest

BUSYBOX = "/bin/busybox"
LONG_PATH = "share/" + "/".join(["a-rather-long-folder-name-%02d" % i for i in range(9)]) + "/file.txt"
EPOCH = 1700000000

HELLO_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char cwd[4096];
    printf("hello from dappdeps (%s)\n", argc > 1 ? argv[1] : "no args");
    if (getcwd(cwd, sizeof cwd)) printf("cwd %s\n", cwd);
    return 0;
}
"""


def busybox_path():
    """Debian's busybox-static (a static busybox runs in any image, scratch included)."""
    path = shutil.which("busybox") or BUSYBOX
    out = subprocess.run(["file", "-L", path], capture_output=True, text=True).stdout \
        if shutil.which("file") else "statically linked"
    if not os.path.exists(path) or "statically linked" not in out:
        pytest.fail("busybox-static is missing: apt-get install busybox-static "
                    "(bash .ci/podman.sh installs it)")
    return path


def compile_static(out, source=HELLO_C):
    """gcc -static a tiny C program to out; returns out."""
    out = Path(out)
    src = out.with_suffix(".c")
    src.write_text(source)
    subprocess.run(["gcc", "-static", "-O1", "-s", "-o", str(out), str(src)], check=True)
    src.unlink()
    return out


def write_tree(root, files):
    """files: {relative path: bytes | str | ("file", bytes, mode) | ("symlink", target)
    | ("dir", mode) | ("copy", host path, mode)}."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for rel, spec in sorted(files.items()):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, (bytes, str)):
            spec = ("file", spec, 0o644)
        kind = spec[0]
        if kind == "file":
            data = spec[1].encode() if isinstance(spec[1], str) else spec[1]
            path.write_bytes(data)
            os.chmod(path, spec[2])
        elif kind == "copy":
            shutil.copyfile(spec[1], path)
            os.chmod(path, spec[2])
        elif kind == "symlink":
            os.symlink(spec[1], path)
        elif kind == "dir":
            path.mkdir(exist_ok=True)
            os.chmod(path, spec[1])
        else:
            raise ValueError(kind)


def make_stage(cache, dist, version, components, prefix_root="/.dapp/deps", licenses=None):
    """Write cache/stage/<dist>/<comp>/tree for each component and the merged manifest.

    components: {name: files for write_tree}, in build order. Returns the manifest path."""
    cache = Path(cache)
    layers, comps = [], []
    for name, files in components.items():
        stage = cache / "stage" / dist / name
        write_tree(stage / "tree", files)
        entries = manifest.scan_tree(stage / "tree")
        (stage / "manifest.json").write_text(canonical.dumps(
            {"format": 1, "name": name, "version": "1.0", "entries": entries}))
        layers.append((name, entries, set()))
        src = f"{name}-1.0.tar.gz"
        comps.append({"name": name, "version": "1.0",
                      "license": (licenses or {}).get(name, "MIT"),
                      "description": f"fixture {name}",
                      "sources": [{"file": src, "sha256": hashlib.sha256(src.encode()).hexdigest(),
                                   "urls": [f"https://example.invalid/{src}"]}]})
    doc = {"format": 1, "distribution": dist, "version": version,
           "prefix": f"{prefix_root}/{dist}/{version}", "components": comps,
           "entries": manifest.merge(dist, layers)}
    path = cache / "stage" / f"{dist}.manifest.json"
    write_atomic(path, canonical.dumps(doc))
    return path


def small_config(cache, distributions, data=None):
    """A Config of just these distributions (no recipes) over an existing cache."""
    from tasks.model.config import Config
    cache = Path(cache)
    return Config(path=cache.parent / "config.yaml", root=cache.parent, data=data or {},
                  cache=cache, recipes_dir=cache.parent / "recipes", prefix_root="/.dapp/deps",
                  jobs=1, mirrors=(), download={}, distributions=distributions, recipes={},
                  source_date_epoch=EPOCH)


def toolchain_runtime():
    """The include/exclude patterns of the toolchain's run-time image, read from the
    project's own config.yaml (what production exports), not a copy of them."""
    from tasks.model.config import load_config
    cfg = load_config(Path(__file__).resolve().parent.parent)
    toolchain = cfg.distributions["toolchain"]
    spec = toolchain.images[toolchain.runtime_image]
    return list(spec["include"]), list(spec["exclude"])


def demo_stage(cache, dist="fx", version="1.0", workdir=None):
    """A distribution with a static C program, busybox (as bin/sh), a library folder with
    versioned .so links, locale data and an etc/ file: enough to exercise images."""
    workdir = Path(workdir or cache) / "bin-src"
    workdir.mkdir(parents=True, exist_ok=True)
    hello = compile_static(workdir / "hello")
    busybox = busybox_path()
    return make_stage(cache, dist, version, {
        "hello": {"bin/hello": ("copy", str(hello), 0o755),
                  "share/doc/hello/README": "hello, the fixture program\n"},
        "shell": {"bin/busybox": ("copy", busybox, 0o755),
                  "bin/sh": ("symlink", "busybox"),
                  "etc/profile": "export FIXTURE_PROFILE=loaded\n"},
        "libs": {"lib/libfx.so.1.2.3": b"\x7fELF not really\n" * 100,
                 "lib/libfx.so.1": ("symlink", "libfx.so.1.2.3"),
                 "lib/libfx.so": ("symlink", "libfx.so.1"),
                 "lib/libfx.a": b"!<arch>\n",
                 "lib/libfx.so.1.2.3-gdb.py": "# printers\n",
                 "lib/ld-linux-x86-64.so.2": b"\x7fELF loader\n",
                 "lib/gconv/UTF-16.so": b"gconv\n",
                 "lib/gconv/gconv-modules": "module x\n",
                 "lib/locale/locale-archive": b"\0" * 4096,
                 "include/fx.h": "int fx(void);\n",
                 LONG_PATH: "a path longer than ustar's 100 + 155 bytes\n",
                 "share/long-link": ("symlink", "../" + LONG_PATH)},
    }, licenses={"shell": "GPL-2.0-only", "libs": "LGPL-2.1-or-later OR MIT"})


# ---- images made without a registry ------------------------------------------------
def rootfs_image(out, repository, tag="latest", files=None, cmd=None, env=None,
                 entrypoint=None, architecture="amd64"):
    """A one-layer docker-archive (manifest.json + config + layer.tar) holding files
    ({path: ("file", bytes, mode) | ("symlink", target) | ("dir", mode)}); no daemon."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, spec in sorted((files or {}).items()):
            info = tarfile.TarInfo(path)
            info.mtime, info.uname, info.gname = EPOCH, "", ""
            if spec[0] == "dir":
                info.type, info.mode = tarfile.DIRTYPE, spec[1]
                tar.addfile(info)
            elif spec[0] == "symlink":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, spec[1], 0o777
                tar.addfile(info)
            else:
                data = spec[1] if isinstance(spec[1], bytes) else Path(spec[1]).read_bytes()
                info.size, info.mode = len(data), spec[2]
                tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = hashlib.sha256(layer_bytes).hexdigest()
    config = {"architecture": architecture, "os": "linux", "created": "2023-11-14T22:13:20Z",
              "config": {"Env": env or ["PATH=/bin:/usr/bin:/sbin:/usr/sbin"],
                         **({"Cmd": cmd} if cmd else {}),
                         **({"Entrypoint": entrypoint} if entrypoint else {})},
              "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]}}
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_hex = hashlib.sha256(config_bytes).hexdigest()
    docker_manifest = [{"Config": f"{config_hex}.json", "RepoTags": [f"{repository}:{tag}"],
                        "Layers": [f"{diff_id}/layer.tar"]}]
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((f"{diff_id}/layer.tar", layer_bytes),
                           (f"{config_hex}.json", config_bytes),
                           ("manifest.json", json.dumps(docker_manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), EPOCH
            tar.addfile(info, io.BytesIO(data))
    return f"sha256:{config_hex}"


def busybox_files(busybox=None):
    """A busybox image's files: the host's busybox-static, or another one
    (foreignbin.busybox_arm64: the host's names its applets, the same Debian release has
    the same list)."""
    data = Path(busybox or busybox_path()).read_bytes()
    applets = subprocess.run([busybox_path(), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    files = {"bin": ("dir", 0o755), "bin/busybox": ("file", data, 0o755),
             "etc": ("dir", 0o755), "tmp": ("dir", 0o1777), "root": ("dir", 0o700),
             "etc/passwd": ("file", b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
             "etc/group": ("file", b"root:x:0:\n", 0o644)}
    for applet in applets:
        if applet != "busybox":
            files[f"bin/{applet}"] = ("symlink", "busybox")
    return files


# ---- engine access -----------------------------------------------------------------
REPO_ROOT = Path(__file__).resolve().parent.parent
# name -> (address, the script that starts it); DAPPDEPS_TEST_<NAME>_HOST overrides an address
ENGINES = {
    "podman": ("unix:///run/podman/podman.sock", ".ci/podman.sh"),
    "docker": ("unix:///run/dappdeps-docker/docker.sock", ".ci/docker.sh"),
}
ENGINE_NAMES = tuple(ENGINES)
_STARTED = set()


def engine_host(name):
    return os.environ.get(f"DAPPDEPS_TEST_{name.upper()}_HOST") or ENGINES[name][0]


def _ping(address):
    from tasks.ship import engine as eng
    return eng.connect_to(eng.Target(name="test", address=address, origin="test"))


def engine(name="podman"):
    """A docker SDK client of engine `name` (ENGINES); never a skip: an engine that does not
    answer is started once with its .ci script (root only), else the test fails."""
    address = engine_host(name)
    client = _ping(address)
    if client is None and name not in _STARTED and os.geteuid() == 0 \
            and address == ENGINES[name][0]:
        _STARTED.add(name)
        subprocess.run(["bash", str(REPO_ROOT / ENGINES[name][1])], capture_output=True,
                       text=True, timeout=900)
        client = _ping(address)
    if client is None:
        pytest.fail(f"the {name} engine does not answer on {address}: run ./setup (it starts "
                    f"Podman's API and a private dockerd; or bash {ENGINES[name][1]}).",
                    pytrace=False)
    return client


def engine_config(*names):
    """config.yaml `engines:` for these test engines."""
    return [{"name": n, "host": engine_host(n)} for n in names]


def ensure_image(client, tmp_dir, repository, files, tag="latest", cmd=None, entrypoint=None,
                 architecture="amd64"):
    """Load a rootfs image once per engine (same content -> same id -> skipped)."""
    from tasks.ship import engine as eng
    tar = Path(tmp_dir) / f"{repository.replace('/', '_')}-{tag}.tar"
    image_id = rootfs_image(tar, repository, tag, files, cmd, entrypoint=entrypoint,
                            architecture=architecture)
    eng.load(client, tar, f"{repository}:{tag}", image_id)
    return f"{repository}:{tag}"
