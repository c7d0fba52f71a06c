"""Image export (no daemon): layout, labels, determinism, selection, streaming, tasks."""
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from conftest import REPO
from enginefixture import EPOCH, LONG_PATH, demo_stage, make_stage, small_config, toolchain_runtime
from tasks.ship import image
from tasks.core.errors import UserError
from tasks.ship.image import export_image
from tasks.ship.select import compile_patterns, select

PREFIX = "/.dapp/deps/fx/1.0"
SOURCE = "https://example.invalid/dappdeps"


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return demo_stage(cache)


def export(manifest_path, out, **kw):
    kw.setdefault("source_date_epoch", EPOCH)
    kw.setdefault("labels", {"org.opencontainers.image.source": SOURCE})
    return export_image(manifest_path, None, out, kw.pop("repository", "dappdeps-test/fx"),
                        "1.0", **kw)


def read_image(path):
    """{member name: bytes} of the outer tar, and its members in order."""
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        blobs = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}
    return members, blobs


def layer_members(blob):
    import io
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return {m.name: (m, tar.extractfile(m).read() if m.isfile() else None)
                for m in tar.getmembers()}


def test_one_tar_is_docker_archive_and_oci_layout(stage, tmp_path):
    out = tmp_path / "images" / "fx-1.0.tar"
    result = export(stage, out)
    members, blobs = read_image(out)
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", EPOCH)
    # every blob is named by its sha256
    for name, data in blobs.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    assert json.loads(blobs["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(blobs["index.json"])
    (desc,) = index["manifests"]
    assert desc["digest"] == result["digest"]
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == "dappdeps-test/fx:1.0"
    assert desc["annotations"]["io.containerd.image.name"] == "docker.io/dappdeps-test/fx:1.0"
    manifest = json.loads(blobs["blobs/sha256/" + desc["digest"].split(":")[1]])
    assert manifest["config"]["digest"] == result["id"]
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar"
    assert layer["digest"] == result["layer"] and layer["size"] == result["layer_size"]
    (docker,) = json.loads(blobs["manifest.json"])
    assert docker["RepoTags"] == ["dappdeps-test/fx:1.0"]
    assert docker["Config"] == "blobs/sha256/" + result["id"].split(":")[1]
    assert docker["Layers"] == ["blobs/sha256/" + result["layer"].split(":")[1]]
    config = json.loads(blobs[docker["Config"]])
    assert config["rootfs"] == {"type": "layers", "diff_ids": [result["layer"]]}
    assert config["config"]["Volumes"] == {PREFIX: {}}
    assert config["created"] == "2023-11-14T22:13:20Z"
    # result files next to the tar
    assert (out.parent / "fx-1.0.digest").read_text() == result["digest"] + "\n"
    assert json.loads((out.parent / "fx-1.0.json").read_text()) == result
    assert result["size"] == out.stat().st_size
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]   # no temp left


def test_labels(stage, tmp_path):
    result = export(stage, tmp_path / "fx.tar")
    _, blobs = read_image(tmp_path / "fx.tar")
    labels = json.loads(blobs["blobs/sha256/" + result["id"].split(":")[1]])["config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == "1.0"
    assert labels["org.opencontainers.image.created"] == "2023-11-14T22:13:20Z"
    assert labels["org.opencontainers.image.source"] == SOURCE
    assert labels["org.opencontainers.image.title"] == "fx"
    assert labels["org.opencontainers.image.licenses"] == \
        "GPL-2.0-only AND (LGPL-2.1-or-later OR MIT) AND MIT"
    doc = json.loads(Path(stage).read_text())
    for comp in doc["components"]:
        key = f"io.dappdeps.component.{comp['name']}"
        assert labels[key] == comp["version"]
        assert labels[key + ".sources"] == \
            f"{comp['sources'][0]['file']}@sha256:{comp['sources'][0]['sha256']}"
    assert labels["io.dappdeps.prefix"] == PREFIX


def test_layer_holds_only_the_prefix(stage, tmp_path):
    result = export(stage, tmp_path / "fx.tar")
    _, blobs = read_image(tmp_path / "fx.tar")
    layer = layer_members(blobs["blobs/sha256/" + result["layer"].split(":")[1]])
    names = list(layer)
    assert names[:4] == [".dapp", ".dapp/deps", ".dapp/deps/fx", ".dapp/deps/fx/1.0"]
    assert all(n.startswith(".dapp/deps/fx/1.0/") for n in names[4:])
    assert names == sorted(names, key=lambda n: n.split("/")) or names[4:] == sorted(names[4:])
    root = Path(stage).parent / "fx"
    doc = json.loads(Path(stage).read_text())
    assert len(names) == 4 + len(doc["entries"]) == result["entries"] + 4
    for entry in doc["entries"]:
        member, data = layer[f".dapp/deps/fx/1.0/{entry['path']}"]
        assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
        assert member.mtime == EPOCH
        if entry["type"] == "file":
            assert data == (root / entry["component"] / "tree" / entry["path"]).read_bytes()
            assert member.mode == entry["mode"]
        elif entry["type"] == "symlink":
            assert member.issym() and member.linkname == entry["target"]
        else:
            assert member.isdir() and member.mode == entry["mode"]
    # long names and link targets (PAX records) survive
    assert layer[f".dapp/deps/fx/1.0/{LONG_PATH}"][1].startswith(b"a path longer")
    assert layer[".dapp/deps/fx/1.0/share/long-link"][0].linkname == "../" + LONG_PATH
    # GNU tar agrees (and sees nothing outside the prefix)
    blob_path = tmp_path / "layer.tar"
    blob_path.write_bytes(blobs["blobs/sha256/" + result["layer"].split(":")[1]])
    listing = subprocess.run(["tar", "-tf", str(blob_path)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert listing[0] == ".dapp/" and f".dapp/deps/fx/1.0/{LONG_PATH}" in listing


def test_two_exports_are_identical(stage, tmp_path):
    first = export(stage, tmp_path / "a" / "fx-1.0.tar")
    # what must not matter: file times, the output folder, the umask
    tree = Path(stage).parent / "fx"
    for path in tree.rglob("*"):
        if not path.is_symlink():
            os.utime(path, (1, 1))
    old = os.umask(0o077)
    try:
        second = export(stage, tmp_path / "b" / "fx-1.0.tar")
    finally:
        os.umask(old)
    assert (first["digest"], first["id"], first["layer"]) == \
           (second["digest"], second["id"], second["layer"])
    assert (tmp_path / "a/fx-1.0.tar").read_bytes() == (tmp_path / "b/fx-1.0.tar").read_bytes()
    # and what must: the epoch changes created/mtimes, hence the digest
    third = export(stage, tmp_path / "c" / "fx-1.0.tar", source_date_epoch=EPOCH + 1)
    assert third["digest"] != first["digest"]


@pytest.mark.parametrize("pattern,path,hit", [
    ("**", "bin/hello", True),
    ("bin/*", "bin/hello", True),
    ("bin/*", "bin/x/y", True),            # a matched folder brings its subtree
    ("*", "bin", True),
    ("lib/*.so", "lib/sub/libx.so", False),
    ("lib/**/*.so", "lib/sub/libx.so", True),
    ("lib/**/*.so", "lib/libx.so", True),
    ("**/*-gdb.py", "lib/libstdc++.so.6.0.30-gdb.py", True),
    ("lib/lib*.so.[0-9]*", "lib/libc.so.6", True),
    ("lib/lib*.so.[0-9]*", "lib/libc.so", False),
    ("lib/lib?.so.*", "lib/libm.so.6", True),
    ("lib/lib[!m].so.*", "lib/libm.so.6", False),
    ("/etc/", "etc/profile", True),
    ("etc", "etcetera", False),
])
def test_patterns(pattern, path, hit):
    assert bool(compile_patterns([pattern]).match(path)) is hit


def test_runtime_selection(stage, tmp_path):
    """config.yaml's toolchain-runtime patterns on the fixture distribution."""
    include, exclude = toolchain_runtime()
    doc = json.loads(Path(stage).read_text())
    chosen = {e["path"] for e in select(doc["entries"], include, exclude)}
    assert chosen == {"lib", "lib/ld-linux-x86-64.so.2", "lib/libfx.so.1", "lib/libfx.so.1.2.3",
                      "lib/gconv", "lib/gconv/UTF-16.so", "lib/gconv/gconv-modules",
                      "lib/locale", "lib/locale/locale-archive", "etc", "etc/profile"}
    result = export(stage, tmp_path / "fx-runtime-1.0.tar", repository="dappdeps-test/fx-runtime",
                    include=include, exclude=exclude, title="fx-runtime")
    _, blobs = read_image(tmp_path / "fx-runtime-1.0.tar")
    config = json.loads(blobs["blobs/sha256/" + result["id"].split(":")[1]])
    labels = config["config"]["Labels"]
    assert config["config"]["Volumes"] == {PREFIX: {}}          # same prefix path
    assert labels["io.dappdeps.components"] == "libs shell"     # hello provides nothing here
    assert "io.dappdeps.component.hello" not in labels
    layer = layer_members(blobs["blobs/sha256/" + result["layer"].split(":")[1]])
    assert sorted(n[len(".dapp/deps/fx/1.0/"):] for n in layer if n.count("/") > 3) == sorted(chosen)
    # excluding wins over including, and an image must hold something
    assert select(doc["entries"], ["lib"], ["lib/gconv"])[-1]["path"] != "lib/gconv/gconv-modules"
    with pytest.raises(UserError, match="select nothing"):
        export(stage, tmp_path / "none.tar", include=["nothing/*"])


def test_dangling_links_are_reported(stage, tmp_path):
    result = export(stage, tmp_path / "x.tar", include=["lib/libfx.so"])
    assert result["dangling_links"] == ["lib/libfx.so"]


def test_changed_tree_fails_without_leaving_files(tmp_path):
    manifest_path = make_stage(tmp_path / "cache", "ch", "2", {
        "c": {"bin/tool": ("file", b"x" * 1000, 0o755), "lib/big": ("file", b"y" * 400000, 0o644)}})
    tree = tmp_path / "cache/stage/ch/c/tree"
    out = tmp_path / "images" / "ch-2.tar"
    for victim in ("bin/tool", "lib/big"):
        original = (tree / victim).read_bytes()
        (tree / victim).write_bytes(original + b"more")
        with pytest.raises(UserError, match="manifest says"):
            export(manifest_path, out)
        assert not out.parent.exists() or not list(out.parent.iterdir())
        (tree / victim).write_bytes(original)
    (tree / "bin/tool").rename(tmp_path / "tool")
    with pytest.raises(UserError, match="cannot read .*bin/tool"):
        export(manifest_path, out)
    (tmp_path / "tool").rename(tree / "bin/tool")
    export(manifest_path, out)
    assert out.is_file()


def test_memory_stays_flat(tmp_path):
    """A 300 MB tree (one 256 MB file + 3000 small ones) exports with a small RSS."""
    files = {f"share/many/{i:04d}.txt": f"small file {i}\n" * 20 for i in range(3000)}
    block = hashlib.sha256(b"seed").digest() * (1 << 15)          # 1 MiB, not sparse
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        for i in range(256):
            fh.write(block[i:] + block[:i])
    files["lib/huge.bin"] = ("copy", str(big), 0o644)
    manifest_path = make_stage(tmp_path / "cache", "big", "1", {"c": files})
    big.unlink()
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(REPO)!r})
        from tasks.ship.image import export_image

        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        before = status("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as fh:   # reset the peak (VmHWM)
                fh.write("5")
        except OSError:
            before = status("VmHWM")                         # peak so far, a looser bound
        r = export_image({str(manifest_path)!r}, None, {str(tmp_path / 'big.tar')!r},
                         "t/big", "1", fsync=False)
        print(json.dumps({{"grew_kb": status("VmHWM") - before, "layer_size": r["layer_size"]}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    stats = json.loads(out)
    assert stats["layer_size"] > 256 << 20
    assert stats["grew_kb"] < 64 * 1024, stats       # << 300 MB of content
    print(f"RSS grew {stats['grew_kb'] / 1024:.0f} MB exporting {stats['layer_size'] >> 20} MB")
    # the streamed digest is the real one
    with tarfile.open(tmp_path / "big.tar") as tar:
        member = next(m for m in tar if m.size == stats["layer_size"])
        sha = hashlib.sha256()
        fh = tar.extractfile(member)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            sha.update(chunk)
    assert member.name == f"blobs/sha256/{sha.hexdigest()}"


# ---- the doit stage module ---------------------------------------------------------
def fake_project(cache, manifest_path, **image_spec):
    from tasks.model.config import Distribution
    spec = {"repository": "dappdeps-test/fx", "include": ["**"], "exclude": []}
    spec.update(image_spec)
    dist = Distribution(name="fx", version="1.0", prefix=PREFIX, components=("hello",),
                        uses=(), toolchain="", default=True, images={"fx": spec},
                        description="fixture distribution")
    return small_config(cache, {"fx": dist}, {"engine": {"source": SOURCE}})


def test_image_task_action_and_stamp(stage, tmp_path):
    from tasks.stages import image as stage_images
    cache = Path(stage).parent.parent
    cfg = fake_project(cache, stage)
    dist = cfg.distributions["fx"]
    stamp = stage_images.image_stamp(cfg, dist, "fx", dist.images["fx"])
    stamp.remove()
    assert not stamp.is_current()
    assert stage_images.export(cfg, "fx", "fx") is True
    paths = image.image_paths(cache, "fx", "1.0")
    assert all(paths[k].is_file() for k in ("tar", "json", "digest", "stamp"))
    assert stage_images.image_stamp(cfg, dist, "fx", dist.images["fx"]).is_current()
    result = json.loads(paths["json"].read_text())
    labels_blob = read_image(paths["tar"])[1]["blobs/sha256/" + result["id"].split(":")[1]]
    labels = json.loads(labels_blob)["config"]["Labels"]
    assert labels["org.opencontainers.image.description"] == "fixture distribution"
    assert labels["org.opencontainers.image.source"] == SOURCE
    # a changed selection makes the task run again, and says why
    cfg2 = fake_project(cache, stage, exclude=["share"])
    stale = stage_images.image_stamp(cfg2, cfg2.distributions["fx"], "fx",
                                     cfg2.distributions["fx"].images["fx"])
    assert not stale.is_current() and "exclude changed" in stale.why()
    stage_images._clean(cfg, "fx", "fx")
    assert not any(p.exists() for p in paths.values())
