"""Reproducibility, measured (docs/reproducibility.md): the comparison and its hints on
hand-made stage folders (tasks/verify/repro.py), the seeding of the second cache tree,
the report's section, and `doit repro:<dist>` end to end on small real packages: one that
embeds the time and a random number is caught and named, a reproducible one passes."""
import gzip
import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import run_doit
from fixtures import LIBGREET, FixtureProject

from tasks.build import manifest
from tasks.core import canonical
from tasks.verify import repro

FIRST = Path("/var/cache/first-cache")
SECOND = FIRST / "repro" / "app"
NOW = int(time.time())
CONTEXT = repro.Context.of((FIRST, SECOND), NOW - 60, NOW)


def stage(folder, files, modes=None):
    """A stage folder: tree/ with `files` ({path: bytes, or ("link", target)}) and its
    manifest.json as a build writes it."""
    tree = Path(folder) / "tree"
    tree.mkdir(parents=True)
    for path, content in files.items():
        target = tree / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, tuple):
            os.symlink(content[1], target)
        else:
            target.write_bytes(content)
            os.chmod(target, 0o644)
    for path, mode in (modes or {}).items():
        os.chmod(tree / path, mode)
    (Path(folder) / "manifest.json").write_text(canonical.dumps({"entries": manifest.scan_tree(tree)}))
    (Path(folder) / "build.json").write_text(canonical.dumps({"started": NOW - 5, "finished": NOW}))
    return Path(folder)


def differ(tmp_path, first, second, first_modes=None, second_modes=None):
    """{path: hint} of what differs between two hand-made builds."""
    a = stage(tmp_path / "a", first, first_modes)
    b = stage(tmp_path / "b", second, second_modes)
    result = repro.compare_component(a, b, CONTEXT)
    assert result["files"] == result["identical"] + len(result["differing"])
    return {d["path"]: d["hint"] for d in result["differing"]}


def test_identical_builds_have_nothing_to_say(tmp_path):
    files = {"bin/tool": b"\x7fELF same bytes", "share/doc": b"text\n", "lib/l.so": ("link", "l.so.1")}
    a, b = stage(tmp_path / "a", files), stage(tmp_path / "b", files)
    result = repro.compare_component(a, b, CONTEXT)
    assert result == {"files": 6, "identical": 6, "differing": []}   # + folders bin, lib, share
    assert repro.totals({"x": result})["percent"] == 100.0


@pytest.mark.parametrize("first,second", [
    (b"built 2026-12-01 06:31:27 by make\n", b"built 2026-12-01 06:32:02 by make\n"),
    (b"built 2026-11-30T23:59:59Z\n", b"built 2026-12-01T00:00:01Z\n"),
    (b'version "1.0" (Dec  1 2026 06:31:27)', b'version "1.0" (Dec  2 2026 00:00:03)'),  # __DATE__ __TIME__
    (b"Tue Dec  1 06:31:27 UTC 2026\n", b"Tue Dec  1 06:40:11 UTC 2026\n"),             # date(1)
    (f"stamp={NOW - 30}\n".encode(), f"stamp={NOW}\n".encode()),                        # date +%s
    (f"{NOW - 30}123456789\n".encode(), f"{NOW}987654321\n".encode()),                  # date +%s%N
])
def test_times_are_named_timestamp(tmp_path, first, second):
    assert differ(tmp_path, {"share/stamp": first}, {"share/stamp": second}) == {"share/stamp": "timestamp"}


def test_numbers_far_from_the_builds_and_random_numbers_are_content(tmp_path):
    found = differ(tmp_path, {"a": b"id=1000000000\n", "b": b"seed 12345\n"},
                   {"a": b"id=1000000001\n", "b": b"seed 30125\n"})
    assert found == {"a": "content", "b": "content"}


def test_build_paths_of_either_cache_and_temporary_names(tmp_path):
    found = differ(tmp_path,
                   {"lib/pkgconfig/x.pc": f"libdir={FIRST}/work/app/x/lib\n".encode(),
                    "share/x.debug": b"/tmp/ccA1b2C3.o\0main\0"},
                   {"lib/pkgconfig/x.pc": f"libdir={SECOND}/work/app/x/lib\n".encode(),
                    "share/x.debug": b"/tmp/ccZZ9y8x.o\0main\0"})
    assert found == {"lib/pkgconfig/x.pc": "build path", "share/x.debug": "build path"}


def test_a_time_and_a_path_together(tmp_path):
    found = differ(tmp_path, {"x": f"{FIRST} at 2026-12-01 06:31:27\n".encode()},
                   {"x": f"{SECOND} at 2026-12-01 07:00:00\n".encode()})
    assert found == {"x": "timestamp, build path"}


def test_ordering_of_lines_and_words(tmp_path):
    found = differ(tmp_path, {"list": b"alpha\nbeta\ngamma\n", "libs": b"LIBS = -la -lb -lc\n"},
                   {"list": b"gamma\nalpha\nbeta\n", "libs": b"LIBS = -lc -la -lb\n"})
    assert found == {"list": "ordering", "libs": "ordering"}


def test_mode_hard_links_type_and_paths_present_once(tmp_path):
    found = differ(tmp_path, {"bin/x": b"same", "etc/y": b"y", "only-a": b"1", "kind": b"file"},
                   {"bin/x": b"same", "etc/y": b"y", "only-b": b"1", "kind": ("link", "bin/x")},
                   first_modes={"bin/x": 0o755, "etc": 0o755},
                   second_modes={"bin/x": 0o750, "etc": 0o750})
    assert found == {"bin/x": "mode (umask?)", "etc": "mode (umask?)", "only-a": "only in first build",
                     "only-b": "only in second build", "kind": "type"}


def test_symlink_targets_are_explained_like_contents(tmp_path):
    found = differ(tmp_path, {"lib/link": ("link", f"{FIRST}/stage/x")},
                   {"lib/link": ("link", f"{SECOND}/stage/x")})
    assert found == {"lib/link": "build path"}


def test_gzip_header_time_and_compressed_contents(tmp_path):
    page = b".TH X 1 2026-12-01\n"
    found = differ(tmp_path, {"man1/x.1.gz": gzip.compress(page, mtime=NOW - 100),
                              "man1/y.1.gz": gzip.compress(b"y built 06:31:27\n", mtime=0)},
                   {"man1/x.1.gz": gzip.compress(page, mtime=NOW),
                    "man1/y.1.gz": gzip.compress(b"y built 06:33:59\n", mtime=0)})
    assert found == {"man1/x.1.gz": "timestamp", "man1/y.1.gz": "timestamp"}


# ---- real ELF files and ar archives from the host's compiler --------------------------------
def compile_c(folder, name, source, *flags):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.c").write_text(source)
    out = folder / name
    subprocess.run(["gcc", "-O1", "-o", str(out), str(folder / f"{name}.c"), *flags], check=True,
                   cwd=folder)
    return out.read_bytes()


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs the host's gcc")
def test_elf_files_differing_only_in_their_build_id(tmp_path):
    src = "int main(void) { return 0; }\n"
    one = compile_c(tmp_path / "c1", "p", src, "-Wl,--build-id=0x" + "11" * 20)
    two = compile_c(tmp_path / "c2", "p", src, "-Wl,--build-id=0x" + "22" * 20)
    assert one != two and repro.build_id(one) == bytes.fromhex("11" * 20)
    hints, detail = repro.explain_bytes(one, two, CONTEXT)
    assert hints == ["build id"] and "1111" in detail and "2222" in detail
    assert differ(tmp_path, {"bin/p": one}, {"bin/p": two}) == {"bin/p": "build id"}


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs the host's gcc")
def test_elf_files_embedding_the_build_time(tmp_path):
    src = '#include <stdio.h>\nint main(void) { puts(STAMP); return 0; }\n'
    one = compile_c(tmp_path / "c1", "p", src, '-DSTAMP="Dec  1 2026 06:31:27"')
    two = compile_c(tmp_path / "c2", "p", src, '-DSTAMP="Dec  1 2026 06:44:10"')
    assert repro.build_id(one) != repro.build_id(two)        # a consequence, not the cause
    assert repro.explain_bytes(one, two, CONTEXT)[0] == ["timestamp"]


@pytest.mark.skipif(not shutil.which("gcc"), reason="needs the host's gcc")
def test_static_libraries_with_members_in_another_order(tmp_path):
    for name in ("a", "b"):
        (tmp_path / f"{name}.c").write_text(f"int {name}(void) {{ return 1; }}\n")
        subprocess.run(["gcc", "-c", f"{name}.c"], cwd=tmp_path, check=True)
    subprocess.run(["ar", "rcD", "one.a", "a.o", "b.o"], cwd=tmp_path, check=True)
    subprocess.run(["ar", "rcD", "two.a", "b.o", "a.o"], cwd=tmp_path, check=True)
    subprocess.run(["ar", "rcU", "late.a", "a.o", "b.o"], cwd=tmp_path, check=True)  # real times
    one, two, late = ((tmp_path / f"{n}.a").read_bytes() for n in ("one", "two", "late"))
    assert one != two and one != late
    assert repro.explain_bytes(one, two, CONTEXT)[0] == ["ordering"]
    assert repro.explain_bytes(one, late, CONTEXT)[0] == ["timestamp"]


def test_summary_table(tmp_path):
    results = {"libgreet": {"files": 4, "identical": 4, "differing": []},
               "noisy": {"files": 4, "identical": 2, "differing": [{"path": "a", "hint": "timestamp"},
                                                                   {"path": "b", "hint": "content"}]}}
    lines = repro.table(results)
    assert lines[-1] == "75.00 % bit-identical"
    assert lines[-2].split() == ["total", "8", "6", "2"] and lines[2].split() == ["noisy", "4", "2", "2"]
    assert repro.summary_path(tmp_path, "app") == tmp_path / "reports" / "repro-app.json"


# ---- the second cache tree -----------------------------------------------------------------
def test_seeded_trees_are_hard_links_with_folders_made_anew(tmp_path):
    from tasks.stages.repro import link_tree
    src = tmp_path / "src"
    (src / "lib" / "sub").mkdir(parents=True)
    (src / "lib" / "x").write_bytes(b"x")
    os.link(src / "lib" / "x", src / "lib" / "y")
    os.symlink("x", src / "lib" / "z")
    os.mknod(src / "lib" / "gone", 0o600 | 0o020000, 0)           # an overlayfs whiteout
    os.setxattr(src / "lib" / "sub", manifest.OPAQUE, b"y")
    os.chmod(src / "lib", 0o555)
    assert link_tree(src, tmp_path / "dst") == 7
    dst = tmp_path / "dst"
    assert os.stat(dst / "lib" / "x").st_ino == os.stat(src / "lib" / "x").st_ino
    assert os.stat(dst / "lib" / "y").st_ino == os.stat(src / "lib" / "x").st_ino
    assert os.readlink(dst / "lib" / "z") == "x"
    assert manifest.is_opaque(dst / "lib" / "sub")
    assert os.stat(dst / "lib").st_mode & 0o777 == 0o555
    assert manifest.scan_tree(dst) == manifest.scan_tree(src)


def test_the_second_tree_is_seeded_with_what_it_must_not_redo(tmp_path, monkeypatch):
    from tasks.stages.repro import second_config, seed      # loads the repository's project
    from tasks.model.config import load_config
    proj = FixtureProject(tmp_path, base_url="http://127.0.0.1:9")
    proj.add_package("fixed", "1.0", {"README": "x\n"}, build="script", script="true")
    proj.add_package("noisy", "1.0", {"README": "x\n"}, build="script", script="true")
    proj.add_package("top", "1.0", {"README": "x\n"}, build="script", script="true")
    proj.add_distribution("base", ["fixed"])
    proj.add_distribution("app", ["noisy"], uses=["base"])
    proj.add_distribution("top", ["top"], uses=["app"])
    proj.write_config(buildroot={"suite": "bookworm"})     # its root in the cache: seeded
    monkeypatch.setenv("DAPPDEPS_CONFIG", str(proj.root / "config.yaml"))
    cfg = load_config(proj.root)
    for dist, comp in (("base", "fixed"), ("app", "noisy"), ("top", "top")):
        (cfg.tree_of(dist, comp) / "share").mkdir(parents=True)
        (cfg.stage_of(dist, comp) / "key.json").write_text("{}")
        cfg.assembled_manifest(dist).write_text("{}")
        cfg.assembled_stamp(dist).write_text("{}")
    (cfg.cache / "downloads").mkdir()
    (cfg.cache / "downloads" / "noisy-1.0.tar.gz").write_text("source")
    cfg.buildroot_dir.mkdir()
    (cfg.buildroot_dir / "root-file").write_text("root")
    second = second_config(cfg, "top")
    assert second.cache == cfg.cache / "repro" / "top" and second.distributions == cfg.distributions
    seed(cfg, second, "top")
    for dist, comp in (("base", "fixed"), ("app", "noisy")):          # used, transitively
        assert (second.stage_of(dist, comp) / "key.json").is_file()
        assert second.assembled_manifest(dist).is_file() and second.assembled_stamp(dist).is_file()
    assert not second.stage_of("top").exists() and not second.assembled_stamp("top").exists()
    assert (second.cache / "downloads" / "noisy-1.0.tar.gz").read_text() == "source"
    assert (second.cache / "buildroot" / "root-file").read_text() == "root"


# ---- the nightly report's section ----------------------------------------------------------
def test_the_report_shows_the_latest_measurement(tmp_path):
    from types import SimpleNamespace

    from tasks.nightly.records import repro_records
    from tasks.report.htmlpage import _repro as html_section
    from tasks.report.markdown import _repro as md_section
    cfg = SimpleNamespace(cache=tmp_path / "cache", root=tmp_path,
                          distributions={"app": SimpleNamespace(name="app"),
                                         "other": SimpleNamespace(name="other")})
    path = repro.summary_path(cfg.cache, "app")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({
        "when": "2026-12-01T06:31:27Z", "ok": False,
        "totals": {"files": 8, "identical": 6, "differing": 2, "percent": 75.0},
        "components": [{"name": "noisy", "differing": [{"path": "share/stamp", "hint": "timestamp"},
                                                       {"path": "share/random", "hint": "content"}]}],
        "images": [{"name": "app", "same": False}]}))
    (records,) = repro_records(cfg)
    assert records["percent"] == 75.0 and records["differing"] == 2 and not records["ok"]
    assert records["summary"] == "cache/reports/repro-app.json"
    md = "\n".join(md_section([records]))
    assert "## Reproducibility" in md and "`noisy/share/stamp` (timestamp)" in md and "75.00 %" in md
    html = "\n".join(html_section([records], lambda p: p))
    assert "<code>noisy/share/random</code> (content)" in html and "image digests differ" in html
    assert md_section([]) == [] and html_section([], str) == []


# ---- end to end: real builds, a real child doit ---------------------------------------------
NOISY_SCRIPT = """\
mkdir -p "$PREFIX/share/noisy"
cp README "$PREFIX/share/noisy/README"
cp "$PREFIX_BASE/share/fixed/README" "$PREFIX/share/noisy/from-base"
date +%s%N > "$PREFIX/share/noisy/stamp"
echo "$RANDOM$RANDOM$RANDOM" > "$PREFIX/share/noisy/random"
"""


def repro_project(root):
    """base (one file), app = libgreet (compiled) + noisy (embeds the time and a random
    number, and copies base's file: base must be there, seeded), clean = libgreet alone;
    app and clean use base."""
    proj = FixtureProject(root)
    proj.add_package("fixed", "1.0", {"README": "fixed\n"}, build="script",
                     script='mkdir -p "$PREFIX/share/fixed"\ncp README "$PREFIX/share/fixed/"\n')
    proj.add_package("libgreet", "1.0", LIBGREET)
    proj.add_package("noisy", "1.0", {"README": "noisy\n"}, build="script", script=NOISY_SCRIPT,
                     depends=["fixed"])
    proj.add_distribution("base", ["fixed"])
    proj.add_distribution("app", ["libgreet", "noisy"], uses=["base"])
    proj.add_distribution("clean", ["libgreet"], uses=["base"])
    proj.write_config()
    return proj


def test_repro_catches_a_non_reproducible_package_and_passes_a_reproducible_one(tmp_path):
    proj = repro_project(tmp_path)
    config = proj.root / "config.yaml"

    bad = run_doit(config, "repro:app")
    assert bad.returncode != 0, bad.text[-3000:]
    assert "noisy: share/noisy/stamp: timestamp" in bad.text, bad.text[-3000:]
    assert "noisy: share/noisy/random: content" in bad.text
    doc = json.loads((proj.cache / "reports" / "repro-app.json").read_text())
    assert doc["ok"] is False and doc["second_build_status"] == 0
    comps = {c["name"]: c for c in doc["components"]}
    assert {d["path"]: d["hint"] for d in comps["noisy"]["differing"]} == {
        "share/noisy/stamp": "timestamp", "share/noisy/random": "content"}
    assert comps["libgreet"]["differing"] == [] and comps["libgreet"]["files"] >= 5
    assert doc["conditions"]["umask"][1] == "027" and doc["conditions"]["jobs"] == [2, 1]
    (image,) = doc["images"]
    assert image["first"] and image["second"] and not image["same"]
    # the second build ran in its own cache and did not redo base: it was seeded
    second = proj.cache / "repro" / "app"
    assert (second / "stage" / "app" / "noisy" / "key.json").is_file()
    log = (proj.cache / "logs" / "repro" / "app.log").read_text()
    assert "-- build:base/fixed" in log and ".  build:app/noisy" in log
    first_readme = proj.cache / "stage" / "base" / "fixed" / "tree" / "share" / "fixed" / "README"
    seeded = second / "stage" / "base" / "fixed" / "tree" / "share" / "fixed" / "README"
    assert os.stat(seeded).st_ino == os.stat(first_readme).st_ino
    # the conditions reached the second build: one job (the engine resets the umask itself)
    assert json.loads((second / "stage" / "app" / "libgreet" / "build.json").read_text())["jobs"] == 1

    good = run_doit(config, "repro:clean")
    assert good.returncode == 0, good.text[-3000:]
    assert "100.00 % bit-identical" in good.text
    doc = json.loads((proj.cache / "reports" / "repro-clean.json").read_text())
    assert doc["ok"] is True and doc["totals"]["percent"] == 100.0
    assert doc["images"][0]["same"] is True
