"""Images ship stripped ELF files (the stage keeps them unstripped): tasks.ship.strip."""
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from enginefixture import EPOCH, make_stage, small_config
from tasks.core import elf
from tasks.core.errors import UserError
from tasks.ship import strip
from tasks.ship.image import export_image

PREFIX = ".dapp/deps/st/1.0"

LIB_C = r"""
int fx_add(int a, int b) { return a + b; }
"""
MAIN_C = r"""
#include <stdio.h>
static int local_helper(int x) { return x * 2; }
int main(void) { printf("stripped hello %d\n", local_helper(21)); return 0; }
"""


def _gcc(*args):
    subprocess.run(["gcc", *map(str, args)], check=True)


def elf_sections(path):
    """Section names of an ELF file, read from its section headers by readelf."""
    out = subprocess.run(["readelf", "-W", "-S", str(path)], capture_output=True, text=True,
                         check=True).stdout
    names = []
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("[") and "]" in line and not line.startswith("[Nr]"):
            names.append(line.split("]", 1)[1].split()[0])
    return names


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Unstripped (gcc -g) program and shared library, an object file, a static archive,
    an already stripped program, a foreign-architecture ELF and a text file."""
    if not shutil.which("gcc") or not shutil.which("readelf"):
        pytest.fail("gcc and readelf (binutils) are needed: apt-get install gcc binutils")
    work = tmp_path_factory.mktemp("strip-src")
    (work / "lib.c").write_text(LIB_C)
    (work / "main.c").write_text(MAIN_C)
    _gcc("-g", "-O0", "-o", work / "hello", work / "main.c")
    _gcc("-g", "-O0", "-shared", "-fPIC", "-o", work / "libfx.so.1.0", work / "lib.c")
    _gcc("-g", "-O0", "-c", "-o", work / "lib.o", work / "lib.c")
    subprocess.run(["ar", "rcD", str(work / "libfx.a"), str(work / "lib.o")], check=True)
    _gcc("-s", "-O0", "-o", work / "hello-stripped", work / "main.c")
    # the same program claiming another machine in its header (e_machine at offset 18):
    # the host's strip must not touch it
    foreign = bytearray((work / "hello").read_bytes())
    other = 183 if elf.ident(work / "hello").machine != "EM_AARCH64" else 62   # aarch64, else x86-64
    foreign[18:20] = other.to_bytes(2, "little" if foreign[5] == 1 else "big")
    (work / "foreign").write_bytes(bytes(foreign))
    for name in ("hello", "libfx.so.1.0"):
        assert ".debug_info" in elf_sections(work / name)
    return work


@pytest.fixture()
def stage(built, tmp_path):
    files = {
        "bin/hello": ("copy", str(built / "hello"), 0o755),
        "bin/hello-link": ("symlink", "hello"),
        "bin/hello-stripped": ("copy", str(built / "hello-stripped"), 0o755),
        "bin/script": ("file", "#!/bin/sh\necho hi\n", 0o755),
        "lib/libfx.so.1.0": ("copy", str(built / "libfx.so.1.0"), 0o755),
        "lib/libfx.so.1": ("symlink", "libfx.so.1.0"),
        "lib/libfx.a": ("copy", str(built / "libfx.a"), 0o644),
        "lib/fx.o": ("copy", str(built / "lib.o"), 0o644),
        "lib/foreign/hello": ("copy", str(built / "foreign"), 0o755),
        "share/fake.so": ("file", b"\x7fELF not really an ELF file\n" * 10, 0o644),
    }
    return make_stage(tmp_path / "cache", "st", "1.0", {"c": files})


def export(manifest_path, out, **kw):
    return export_image(manifest_path, None, out, "dappdeps-test/st", "1.0",
                        source_date_epoch=EPOCH, fsync=False, **kw)


def layer_files(tar_path, result):
    """{prefix-relative path: (TarInfo, bytes or None)} of the image's layer."""
    with tarfile.open(tar_path) as outer:
        blob = outer.extractfile("blobs/sha256/" + result["layer"].split(":")[1]).read()
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        return {m.name[len(PREFIX) + 1:]: (m, tar.extractfile(m).read() if m.isfile() else None)
                for m in tar.getmembers() if m.name.startswith(PREFIX + "/")}


def tree(manifest_path):
    return Path(manifest_path).parent / "st" / "c" / "tree"


def test_strip_ships_smaller_working_elf_files(stage, tmp_path):
    result = export(stage, tmp_path / "a" / "st-1.0.tar", strip=True)
    layer = layer_files(tmp_path / "a" / "st-1.0.tar", result)
    src = tree(stage)
    saved = 0
    for rel in ("bin/hello", "lib/libfx.so.1.0"):
        member, data = layer[rel]
        original = (src / rel).read_bytes()
        assert len(data) < len(original) and member.size == len(data)
        saved += len(original) - len(data)
        shipped = tmp_path / rel.replace("/", "_")
        shipped.write_bytes(data)
        sections = elf_sections(shipped)
        assert ".debug_info" not in sections and ".symtab" not in sections, sections
        assert ".dynsym" in sections                         # still links and loads
        assert elf.ident(shipped) == elf.ident(src / rel)
        assert member.mode == 0o755
    # the stripped program still runs
    program = tmp_path / "hello-shipped"
    program.write_bytes(layer["bin/hello"][1])
    program.chmod(0o755)
    assert subprocess.run([str(program)], capture_output=True, text=True,
                          check=True).stdout == "stripped hello 42\n"
    # untouched: static archive, object file, already stripped program, foreign-machine
    # ELF, a file that only starts like ELF, a script
    for rel in ("lib/libfx.a", "lib/fx.o", "bin/hello-stripped", "lib/foreign/hello",
                "share/fake.so", "bin/script"):
        assert layer[rel][1] == (src / rel).read_bytes(), rel
    assert layer["bin/hello-link"][0].linkname == "hello"
    assert layer["lib/libfx.so.1"][0].linkname == "libfx.so.1.0"
    # the stage keeps its debug info
    assert ".debug_info" in elf_sections(src / "bin/hello")
    stripped = result["stripped"]
    assert stripped["files"] == 2 and stripped["bytes_saved"] == saved
    assert stripped["failed"] == [] and stripped["tool"].startswith("GNU strip")
    doc = json.loads(Path(stage).read_text())
    assert result["content_size"] == sum(e["size"] for e in doc["entries"]
                                         if e["type"] == "file") - saved
    assert json.loads((tmp_path / "a" / "st-1.0.json").read_text())["stripped"] == stripped
    # no temporary file or folder left next to the image
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == \
        ["st-1.0.digest", "st-1.0.json", "st-1.0.tar"]


def test_stripped_exports_are_deterministic(stage, tmp_path):
    first = export(stage, tmp_path / "a" / "st-1.0.tar", strip=True)
    for path in tree(stage).rglob("*"):
        if not path.is_symlink():
            os.utime(path, (1, 1))
    second = export(stage, tmp_path / "b" / "st-1.0.tar", strip=True)
    assert (first["digest"], first["layer"]) == (second["digest"], second["layer"])
    assert (tmp_path / "a/st-1.0.tar").read_bytes() == (tmp_path / "b/st-1.0.tar").read_bytes()


def test_strip_false_ships_the_stage_bytes(stage, tmp_path):
    result = export(stage, tmp_path / "st-1.0.tar", strip=False)
    layer = layer_files(tmp_path / "st-1.0.tar", result)
    src = tree(stage)
    for rel, (member, data) in layer.items():
        if member.isfile():
            assert data == (src / rel).read_bytes(), rel
    assert result["stripped"] == {"files": 0, "bytes_saved": 0, "tool": None, "failed": []}
    assert result["digest"] != export(stage, tmp_path / "s.tar", strip=True)["digest"]


def fake_strip(folder, body):
    folder.mkdir(exist_ok=True)
    tool = folder / "strip"
    tool.write_text("#!/bin/sh\n" + body)
    tool.chmod(0o755)
    return folder


def test_bad_strip_output_ships_the_original_with_a_warning(stage, tmp_path, monkeypatch,
                                                            capsys):
    # a strip that writes something that is not an ELF file to its -o argument
    fake = fake_strip(tmp_path / "fakebin", 'while [ "$1" != -o ]; do shift; done\n'
                                            'echo garbage > "$2"\n')
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    result = export(stage, tmp_path / "st-1.0.tar", strip=True)
    layer = layer_files(tmp_path / "st-1.0.tar", result)
    assert layer["bin/hello"][1] == (tree(stage) / "bin/hello").read_bytes()
    failed = {f["path"]: f["reason"] for f in result["stripped"]["failed"]}
    assert set(failed) == {"bin/hello", "bin/hello-stripped", "lib/libfx.so.1.0"}
    assert "not an ELF file" in failed["bin/hello"]
    assert result["stripped"]["files"] == 0
    assert "bin/hello: strip's output is not an ELF" in capsys.readouterr().err
    # a strip that fails: the same
    fake_strip(tmp_path / "fakebin", "echo 'strip: cannot do it' >&2; exit 1\n")
    result = export(stage, tmp_path / "st-1.0.tar", strip=True)
    assert {f["reason"] for f in result["stripped"]["failed"]} == \
        {"strip failed: strip: cannot do it"}


def test_missing_strip_is_a_clear_error(stage, tmp_path, monkeypatch):
    monkeypatch.setattr(strip.shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(UserError, match="no `strip` program") as err:
        export(stage, tmp_path / "out" / "st-1.0.tar", strip=True)
    assert "strip: false" in err.value.render()
    assert not list((tmp_path / "out").iterdir())


def test_image_task_strips_by_default_and_stamps_the_strip_version(stage, capsys):
    from tasks.stages import image as stage_images
    from tasks.model.config import Distribution
    from tasks.model.configschema import IMAGE
    assert IMAGE.validate({"name": "x/y"}, "config.yaml")["strip"] is True
    cache = Path(stage).parent.parent

    def project(**spec):
        images = {"st": {"repository": "dappdeps-test/st", "include": ["**"], "exclude": [],
                         **spec}}
        dist = Distribution(name="st", version="1.0", prefix="/" + PREFIX, components=("c",),
                            uses=(), toolchain="", default=True, images=images)
        return small_config(cache, {"st": dist})

    cfg = project(strip=True)
    dist = cfg.distributions["st"]
    stamp = stage_images.image_stamp(cfg, dist, "st", dist.images["st"])
    assert stamp.inputs["strip"] == strip.strip_version() != ""
    assert stage_images.export(cfg, "st", "st") is True
    assert "stripped 2 ELF files" in capsys.readouterr().out
    assert stage_images.image_stamp(cfg, dist, "st", dist.images["st"]).is_current()
    # turning it off (or another binutils) exports again
    off = project(strip=False)
    stale = stage_images.image_stamp(off, off.distributions["st"], "st",
                                     off.distributions["st"].images["st"])
    assert not stale.is_current() and "strip changed" in stale.why()
    assert stage_images.export(off, "st", "st") is True
    assert "not stripped" in capsys.readouterr().out


AARCH64_START = """\
    .globl _start
    .text
local_label_kept_in_symtab:
_start:
    mov x8, #93
    mov x0, #0
    svc #0
"""
AARCH64_TOOLS = ("aarch64-linux-gnu-as", "aarch64-linux-gnu-ld", "aarch64-linux-gnu-strip")


def test_another_platforms_image_is_stripped_by_its_strip(built, tmp_path):
    """An arm64 export (strip_tool: a cross toolchain's strip and EM_AARCH64) strips the
    aarch64 programs, with their symbols, and leaves the host's programs alone."""
    missing = [t for t in AARCH64_TOOLS if not shutil.which(t)]
    assert not missing, f"{missing} missing: apt-get install binutils-aarch64-linux-gnu (./setup)"
    (tmp_path / "start.s").write_text(AARCH64_START)
    subprocess.run(["aarch64-linux-gnu-as", "-o", tmp_path / "start.o", tmp_path / "start.s"],
                   check=True)
    subprocess.run(["aarch64-linux-gnu-ld", "-o", tmp_path / "exit0", tmp_path / "start.o"],
                   check=True)
    assert ".symtab" in elf_sections(tmp_path / "exit0")
    manifest = make_stage(tmp_path / "cache", "st", "1.0", {"c": {
        "bin/exit0": ("copy", str(tmp_path / "exit0"), 0o755),
        "bin/hello": ("copy", str(built / "hello"), 0o755)}})
    tool = shutil.which("aarch64-linux-gnu-strip")
    result = export(manifest, tmp_path / "out" / "st-1.0-arm64.tar", strip=True,
                    platform="linux/arm64", strip_tool=(tool, (64, True, "EM_AARCH64")))
    layer = layer_files(tmp_path / "out" / "st-1.0-arm64.tar", result)
    shipped = tmp_path / "exit0-shipped"
    shipped.write_bytes(layer["bin/exit0"][1])
    assert ".symtab" not in elf_sections(shipped)
    assert elf.ident(shipped) == elf.ident(tmp_path / "exit0")
    assert len(layer["bin/exit0"][1]) < (tmp_path / "exit0").stat().st_size
    assert layer["bin/hello"][1] == (tree(manifest) / "bin/hello").read_bytes()  # not its machine
    stripped = result["stripped"]
    assert stripped["files"] == 1 and stripped["failed"] == []
    assert stripped["tool"] == strip.strip_version(tool) != ""
