"""The nightly command end to end (bin/nightly on small generated packages: real compiles,
real doit, real lock and signals), its reports (JSON schema, HTML parsed and rendered by
headless Chromium when installed), and the SBOM + license texts of the legal stage.

DOCKER_HOST points at a socket that does not exist, so load:<image> prints its "no engine"
notice instead of loading test images into the machine's engine."""
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest

from conftest import REPO, doit_env
from fixtures import HELLO, LIBGREET, FixtureProject, wait_for

from tasks.nightly.outcome import EXIT_FAILED, EXIT_LOCKED, EXIT_OK
from tasks.report import runs, schema


NIGHTLY = REPO / "bin" / "nightly"
NO_ENGINE = "unix:///nonexistent/dappdeps-test-engine.sock"
LICENSE_TEXT = "MIT License\n\nCopyright (c) libgreet authors\n"
HELLO_COPYING = "hello is free software; see the terms below.\n"


def nightly_env(config):
    env = doit_env(config)
    env["DOCKER_HOST"] = NO_ENGINE
    env["PYTHON"] = sys.executable
    return env


def nightly(config, *args, timeout=300):
    proc = subprocess.run([str(NIGHTLY), *args], env=nightly_env(config), capture_output=True,
                          text=True, timeout=timeout)
    proc.text = proc.stdout + proc.stderr
    return proc


def start_nightly(config, *args):
    return subprocess.Popen([str(NIGHTLY), *args], env=nightly_env(config), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def latest(proj):
    run_dir = (proj.cache / "reports" / "latest").resolve()
    return run_dir, json.loads((run_dir / "report.json").read_text())


def by_name(report):
    return {t["name"]: t for t in report["tasks"]}


def licensed_project(root, **config):
    """libgreet (LICENSE at the top of its tarball) and hello (doc/COPYING), with texts."""
    proj = FixtureProject(root)
    proj.add_package("libgreet", "1.0", dict(LIBGREET, LICENSE=LICENSE_TEXT),
                     license_files=["LICENSE"], homepage="https://example.org/libgreet")
    proj.add_package("hello", "1.0", dict(HELLO, **{"doc/COPYING": HELLO_COPYING}),
                     depends=["libgreet"], license_files=["doc/COPYING"], license="GPL-3.0-or-later")
    proj.add_distribution("demo", ["hello", "libgreet"])
    proj.write_config(**config)
    return proj


# ---- HTML checks -------------------------------------------------------------------------
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class StrictHTML(HTMLParser):
    """Well-formedness (every element closed, in order) and every URL the page uses."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.urls, self.tags, self.errors = [], [], {}, []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.urls += [v for k, v in attrs if k in ("href", "src", "xlink:href", "action") and v]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        self.urls += [v for k, v in attrs if k in ("href", "src") and v]

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def check_html(path):
    text = Path(path).read_text()
    assert text.startswith("<!DOCTYPE html>")
    parser = StrictHTML()
    parser.feed(text)
    parser.close()
    assert not parser.errors and not parser.stack, (parser.errors, parser.stack)
    external = [u for u in parser.urls if u.startswith(("http:", "https:", "//"))]
    assert not external, f"the page loads external resources: {external}"
    assert "<script" not in text
    for url in parser.urls:        # relative links point at files that exist
        if url.startswith("#") or url.startswith("latest/"):
            continue
        target = (Path(path).parent / url.split("#")[0]).resolve()
        assert target.exists(), f"{path}: broken link {url}"
    parser.all_text = " ".join(parser.text)
    return parser


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(html_path, png, width=1100, height=1400):
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                        "--disable-background-networking", "--disable-component-update",
                        "--no-first-run", f"--user-data-dir={profile}", "--hide-scrollbars",
                        f"--window-size={width},{height}", f"--screenshot={png}",
                        Path(html_path).resolve().as_uri()],
                       capture_output=True, timeout=60)
    data = Path(png).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (w, h) == (width, height)
    return len(data)


# ---- end to end ----------------------------------------------------------------------------
def test_nightly_builds_reports_sbom_then_nothing_to_rebuild(tmp_path):
    proj = licensed_project(tmp_path, reports={"keep": 2})
    config = proj.root / "config.yaml"
    first = nightly(config)
    assert first.returncode == EXIT_OK, first.text[-3000:]
    run_dir, report = latest(proj)
    jsonschema.validate(report, schema.REPORT_SCHEMA, format_checker=jsonschema.FormatChecker())
    tasks = by_name(report)
    assert report["result"] == "ok" and not report["nothing_to_rebuild"]
    for name in ("build:demo/libgreet", "build:demo/hello", "assemble:demo", "image:demo", "legal:demo"):
        assert tasks[name]["status"] == "ran", tasks[name]
        assert tasks[name]["seconds"] >= 0 and tasks[name]["why"]
    assert tasks["build:demo/hello"]["why"].startswith("never built")
    assert tasks["build:demo/hello"]["log"] == "cache/logs/demo/hello.log"
    assert tasks["build:demo/hello"]["started"] >= tasks["build:demo/libgreet"]["finished"]

    # images: digest and size from cache/images/*.json, SBOM and license texts next to it
    result = json.loads((proj.cache / "images/demo-1.0.json").read_text())
    (image,) = report["images"]
    assert image["digest"] == result["digest"] and image["size"] == result["size"] > 0
    assert image["sbom"] == "cache/images/demo-1.0.cdx.json" and image["status"] == "ran"
    assert {c["name"] for c in image["components"]} == {"hello", "libgreet"}
    legal = proj.cache / "images/demo-1.0.legal"
    assert (legal / "licenses/libgreet-1.0/LICENSE").read_text() == LICENSE_TEXT
    assert (legal / "licenses/hello-1.0/doc/COPYING").read_text() == HELLO_COPYING
    assert "hello,1.0,GPL-3.0-or-later,doc/COPYING" in (legal / "manifest.csv").read_text()
    sums = (legal / "legal-info.sha256").read_text()
    assert "licenses/hello-1.0/doc/COPYING" in sums and "manifest.csv" in sums

    sbom_text = (proj.cache / "images/demo-1.0.cdx.json").read_text()
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom_text) is None
    sbom = json.loads(sbom_text)
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.6"
    assert sbom["metadata"]["component"]["name"] == "dappdeps/demo"
    assert result["digest"] in sbom["metadata"]["component"]["purl"]
    comps = {c["name"]: c for c in sbom["components"]}
    assert comps["hello"]["version"] == "1.0"
    assert comps["hello"]["licenses"] == [{"license": {"id": "GPL-3.0-or-later"}}]
    ref = comps["libgreet"]["externalReferences"]
    src = proj.recipes["libgreet"]["sources"][0]
    assert any(r["url"] == src["urls"][0] and r["hashes"][0]["content"] == src["sha256"] for r in ref)
    deps = {d["ref"]: d.get("dependsOn", []) for d in sbom["dependencies"]}
    assert deps["component:hello"] == ["component:libgreet"]

    # Markdown and HTML
    md = (run_dir / "report.md").read_text()
    assert "# dappdeps nightly" in md and "`build:demo/hello`" in md and "demo-1.0.cdx.json" in md
    page = check_html(run_dir / "report.html")
    assert page.tags["svg"] >= 2              # the timeline and the image's size chart
    assert "Timeline" in page.all_text and "build:demo/hello" in page.all_text
    html_text = (run_dir / "report.html").read_text()
    assert "../../images/demo-1.0.cdx.json" in html_text and "../../images/demo-1.0.legal/" in html_text
    if chromium():
        assert screenshot(run_dir / "report.html", tmp_path / "report.png") > 20000

    # nothing changed: seconds, "nothing to rebuild", everything that builds is up to date
    started = time.monotonic()
    second = nightly(config)
    elapsed = time.monotonic() - started
    assert second.returncode == EXIT_OK, second.text[-3000:]
    assert "nothing to rebuild" in second.stderr
    assert elapsed < 20
    run_dir2, report2 = latest(proj)
    assert run_dir2 != run_dir and report2["nothing_to_rebuild"]
    jsonschema.validate(report2, schema.REPORT_SCHEMA)
    assert all(t["status"] == "up-to-date" for t in report2["tasks"] if not t["name"].startswith("load:"))
    assert report2["images"][0]["status"] == "up-to-date" and report2["images"][0]["digest"] == result["digest"]
    assert "nothing to rebuild" in (run_dir2 / "report.md").read_text()
    assert "nothing to rebuild" in check_html(run_dir2 / "report.html").all_text

    # one source changes: only that component (and what follows it) runs, and says why
    proj.add_package("hello", "1.0", dict(HELLO, **{"doc/COPYING": HELLO_COPYING + "v2\n"}),
                     depends=["libgreet"], license_files=["doc/COPYING"], license="GPL-3.0-or-later")
    third = nightly(config)
    assert third.returncode == EXIT_OK, third.text[-3000:]
    run_dir3, report3 = latest(proj)
    tasks = by_name(report3)
    assert tasks["build:demo/libgreet"]["status"] == "up-to-date"
    assert tasks["build:demo/hello"]["status"] == "ran"
    assert "sources changed" in tasks["build:demo/hello"]["why"]
    assert (legal / "licenses/hello-1.0/doc/COPYING").read_text().endswith("v2\n")

    # keep: 2 -> the first run's folder is gone; the index links the two kept runs
    kept = sorted(p.name for p in runs.run_dirs(proj.cache / "reports"))
    assert kept == sorted([run_dir2.name, run_dir3.name])
    index = check_html(proj.cache / "reports/index.html")
    assert f"{run_dir3.name}/report.html" in index.urls and run_dir.name not in " ".join(index.urls)


def test_failing_component_others_still_built(tmp_path):
    proj = FixtureProject(tmp_path)
    proj.add_package("libgreet", "1.0", LIBGREET, build="script",
                     script="echo 'compiling greet.c'\necho 'greet.c:1:6: error: expected ; before greet' >&2\nexit 3\n")
    proj.add_package("hello", "1.0", HELLO, depends=["libgreet"])
    proj.add_package("other", "1.0", {"Makefile": "all:\ninstall:\n\tmkdir -p $(PREFIX)/share && echo o > $(PREFIX)/share/other\n"})
    proj.add_distribution("demo", ["hello", "libgreet"])
    proj.add_distribution("tools", ["other"])
    config = proj.write_config()
    run = nightly(config, "--parallel", "2")
    assert run.returncode == EXIT_FAILED, run.text[-3000:]
    run_dir, report = latest(proj)
    jsonschema.validate(report, schema.REPORT_SCHEMA, format_checker=jsonschema.FormatChecker())
    tasks = by_name(report)
    assert report["result"] == "failed" and report["exit_code"] == EXIT_FAILED
    failed = tasks["build:demo/libgreet"]
    assert failed["status"] == "failed" and "build failed (exit status 3)" in failed["error"]
    assert failed["log"] == "cache/logs/demo/libgreet.log"
    assert any("error: expected ; before greet" in line for line in failed["log_tail"])
    # the unrelated distribution was built all the way to its image
    for name in ("build:tools/other", "assemble:tools", "image:tools", "legal:tools"):
        assert tasks[name]["status"] == "ran", tasks[name]
    assert (proj.cache / "stage/tools/other/key.json").exists()
    for name in ("build:demo/hello", "assemble:demo", "image:demo"):
        assert tasks[name]["status"] == "blocked", tasks[name]
    assert report["totals"]["failed"] == 1 and report["totals"]["blocked"] >= 3
    images = {im["name"]: im for im in report["images"]}
    assert images["tools"]["status"] == "ran" and images["tools"]["digest"]
    assert images["demo"]["status"] == "blocked" and not images["demo"]["exported"]
    assert "1 failed (build:demo/libgreet)" in report["summary"]
    md = (run_dir / "report.md").read_text()
    assert "## Failed" in md and "error: expected ; before greet" in md
    assert "cache/logs/demo/libgreet.log" in md
    page = check_html(run_dir / "report.html")
    assert "error: expected ; before greet" in page.all_text
    assert "../../logs/demo/libgreet.log" in page.urls


def test_overlapping_runs_lock_and_sigterm(tmp_path):
    proj = FixtureProject(tmp_path)
    proj.add_package("libgreet", "1.0", LIBGREET)
    slow = {"name": "slow", "version": "1.0", "description": "a slow build", "license": "MIT",
            "sources": proj.recipes["libgreet"]["sources"], "depends": ["libgreet"],
            "build": "script", "script": "touch $SRCDIR/started\nsleep 41\nmkdir -p $PREFIX/share\n"}
    proj.write_recipe(slow)
    proj.add_distribution("demo", ["libgreet", "slow"])
    config = proj.write_config(reports={"lock_wait": 0})
    first = start_nightly(config)
    try:
        assert wait_for((proj.cache / "work/demo/slow/src/started").exists, timeout=120), first.stderr
        # a second run while the first holds the lock: bounded wait, clear message, its own code
        started = time.monotonic()
        second = nightly(config, "--wait", "1")
        assert second.returncode == EXIT_LOCKED, second.text[-2000:]
        assert 1 <= time.monotonic() - started < 30
        assert f"pid {first.pid}" in second.stderr and "another nightly run" in second.stderr
        assert "Traceback" not in second.text
        # a third one waits (long enough) for the first to end, then runs
        proj.write_recipe(dict(slow, script="mkdir -p $PREFIX/share && echo done > $PREFIX/share/slow\n"))
        third = start_nightly(config, "--wait", "120")
        time.sleep(1.0)
        assert third.poll() is None
        # the scheduler stops the first: SIGTERM acts like Ctrl-C, the report is written
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
        assert first.returncode == 128 + signal.SIGTERM, err[-2000:]
        assert wait_for(lambda: subprocess.run(["pgrep", "-f", "sleep 41"], capture_output=True).returncode != 0,
                        timeout=10)
        out3, err3 = third.communicate(timeout=120)
        assert third.returncode == EXIT_OK, (out3 + err3)[-3000:]
        assert "waiting up to 120 s" in err3
    finally:
        for proc in (first, locals().get("third")):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    dirs = runs.run_dirs(proj.cache / "reports")
    assert len(dirs) == 2             # the locked-out run wrote no report
    interrupted = json.loads((dirs[0] / "report.json").read_text())
    jsonschema.validate(interrupted, schema.REPORT_SCHEMA)
    assert interrupted["result"] == "interrupted" and interrupted["signal"] == "SIGTERM"
    assert interrupted["exit_code"] == 143
    tasks = by_name(interrupted)
    assert tasks["build:demo/libgreet"]["status"] == "ran"
    assert tasks["build:demo/slow"]["status"] == "interrupted"
    assert tasks["image:demo"]["status"] == "not-run"
    assert "interrupted by SIGTERM" in (dirs[0] / "report.md").read_text()
    # the finished work was kept: the run after it only built what was left
    tasks = by_name(json.loads((dirs[1] / "report.json").read_text()))
    assert tasks["build:demo/libgreet"]["status"] == "up-to-date"
    assert tasks["build:demo/slow"]["status"] == "ran"
    assert (proj.cache / "stage/demo/slow/tree/share/slow").read_text() == "done\n"


# ---- pieces -----------------------------------------------------------------------------------
def _synthetic_report():
    tasks = [
        {"name": "check-host", "stage": "check-host", "status": "up-to-date", "why": None,
         "started": None, "finished": None, "seconds": None},
        {"name": "build:base/a", "stage": "build", "status": "ran", "why": "sources changed",
         "started": 0.5, "finished": 59.5, "seconds": 59.0, "log": "cache/logs/base/a.log"},
        {"name": "build:base/b", "stage": "build", "status": "ran", "why": "recipe changed (configure)",
         "started": 0.6, "finished": 30.0, "seconds": 29.4},
        {"name": "build:base/c", "stage": "build", "status": "failed", "why": "never built",
         "started": 30.1, "finished": 45.0, "seconds": 14.9, "error": "build:base/c: build failed",
         "log": "cache/logs/base/c.log", "log_tail": ["make: *** [all] Error 1", "<b>not html</b>"]},
        {"name": "assemble:base", "stage": "assemble", "status": "blocked",
         "why": "not run: build:base/c did not succeed", "started": None, "finished": None, "seconds": None},
    ]
    return {
        "format": schema.FORMAT, "id": "20240101T020000Z", "started": "2024-01-01T02:00:00Z",
        "finished": "2024-01-01T02:01:01Z", "seconds": 61.0, "host": "ci", "root": "/nonexistent",
        "config": "config.yaml", "command": ["nightly"], "doit_args": ["--continue", "-n", "2"],
        "parallel": 2, "result": "failed", "exit_code": 1, "signal": None, "error": None,
        "summary": "1 failed (build:base/c)", "nothing_to_rebuild": False,
        "totals": {"tasks": 5, "ran": 2, "failed": 1, "blocked": 1, "interrupted": 0,
                   "up_to_date": 1, "ignored": 0, "not_run": 0, "busy_seconds": 103.8,
                   "peak_parallel": schema.peak_parallel(tasks)},
        "tasks": tasks,
        "images": [{"name": "base", "distribution": "base", "version": "0.1.0", "exported": True,
                    "ref": "dappdeps/base:0.1.0", "digest": "sha256:" + "ab" * 32, "size": 12_345_678,
                    "files": 300, "components": [{"name": "a", "size": 9_000_000, "files": 200},
                                                 {"name": "b", "size": 3_000_000, "files": 100}]},
                   {"name": "cut", "distribution": "base", "version": "0.1.0", "exported": False}],
    }


def test_report_schema_and_writers(tmp_path):
    report = _synthetic_report()
    assert report["totals"]["peak_parallel"] == 2
    schema.validate(report)
    bad = dict(report, tasks=[dict(report["tasks"][3], error=None)])
    with pytest.raises(jsonschema.ValidationError):
        schema.validate(bad)
    with pytest.raises(jsonschema.ValidationError):
        schema.validate(dict(report, result="fine"))
    run_dir = tmp_path / "reports" / report["id"]
    paths = runs.write_report(report, run_dir)
    assert json.loads(paths["json"].read_text()) == report
    md = paths["md"].read_text()
    assert "FAILED" in md and "make: *** [all] Error 1" in md and "| `build:base/a` | sources changed | 59 s |" in md
    html_text = paths["html"].read_text()
    assert "&lt;b&gt;not html&lt;/b&gt;" in html_text          # log lines are escaped
    parser = StrictHTML()
    parser.feed(html_text)
    assert not parser.errors and not parser.stack
    assert html_text.count('class="bar ') == 3                # three tasks executed
    # retention: the newest N folders stay, the index lists them
    for i in range(4):
        runs.write_report(dict(report, id=f"2024010{i + 2}T020000Z"), tmp_path / "reports" / f"2024010{i + 2}T020000Z")
    removed = runs.update_index(tmp_path / "reports", keep=3)
    assert [p.name for p in removed] == ["20240101T020000Z", "20240102T020000Z"]
    assert [p.name for p in runs.run_dirs(tmp_path / "reports")] == \
        ["20240103T020000Z", "20240104T020000Z", "20240105T020000Z"]
    assert os.readlink(tmp_path / "reports/latest") == "20240105T020000Z"
    check_html(tmp_path / "reports/index.html")


def _tarball(path, members, top=None, mode="w:gz"):
    target = {"fileobj": path} if isinstance(path, io.BytesIO) else {"name": path}
    with tarfile.open(mode=mode, **target) as tar:
        for name, data in members.items():
            full = f"{top}/{name}" if top else name
            info = tarfile.TarInfo(full)
            if isinstance(data, tuple):           # ("link", target)
                info.type, info.linkname = tarfile.SYMTYPE, data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def test_license_texts_follow_the_source_tree_layout(tmp_path, monkeypatch):
    from tasks.model.config import load_config
    from tasks.core.errors import UserError
    from tasks.ship.licenses import collect_license_texts
    proj = FixtureProject(tmp_path)
    proj.add_package("pkg", "1.0", {"Makefile": "all:\n"})
    downloads = proj.cache / "downloads"
    downloads.mkdir(parents=True)
    # main tarball: one top-level folder, a license in a subfolder and one that is a symlink
    _tarball(downloads / "pkg-1.0.tar.xz", {"COPYING": b"GPL text\n", "doc/LICENSE.md": b"docs\n",
                                            "LICENSE": ("link", "COPYING")}, top="pkg-1.0", mode="w:xz")
    # a second source unpacked into gmp/, without a top-level folder
    _tarball(downloads / "gmp.tar.bz2", {"COPYING.LESSERv3": b"LGPL text\n", "README": b"r"}, mode="w:bz2")
    # a tarball of tarballs (like Debian's gcc orig): the inner one is the source tree
    inner = io.BytesIO()
    _tarball(inner, {"COPYING.RUNTIME": b"runtime exception\n"}, top="gcc-12.2.0")
    with tarfile.open(downloads / "outer.tar", "w") as tar:
        info = tarfile.TarInfo("gcc-12-12.2.0/gcc-12.2.0-dfsg.tar.gz")
        info.size = len(inner.getvalue())
        tar.addfile(info, io.BytesIO(inner.getvalue()))
    recipe = dict(proj.recipes["pkg"], license_files=["COPYING", "LICENSE", "doc/LICENSE.md",
                                                      "gmp/COPYING.LESSERv3", "gcc/COPYING.RUNTIME"])
    sha = "0" * 64
    recipe["sources"] = [{"file": "pkg-1.0.tar.xz", "sha256": sha, "urls": ["https://example.org/p"]},
                         {"file": "gmp.tar.bz2", "sha256": sha, "urls": ["https://example.org/g"], "dest": "gmp"},
                         {"file": "outer.tar", "sha256": sha, "urls": ["debian:gcc-12"], "dest": "gcc",
                          "inner": "gcc-12.2.0-dfsg.tar.*"}]
    proj.write_recipe(recipe)
    proj.add_distribution("demo", ["pkg"])
    monkeypatch.setenv("DAPPDEPS_CONFIG", str(proj.write_config()))
    cfg = load_config(tmp_path)
    texts = dict(collect_license_texts(cfg, cfg.recipes["pkg"], {"pkg-1.0.tar.xz"}))
    assert texts == {"COPYING": b"GPL text\n", "LICENSE": b"GPL text\n", "doc/LICENSE.md": b"docs\n",
                     "gmp/COPYING.LESSERv3": b"LGPL text\n", "gcc/COPYING.RUNTIME": b"runtime exception\n"}
    proj.write_recipe(dict(recipe, license_files=["COPYING", "NOTICE"]))
    cfg = load_config(tmp_path)
    with pytest.raises(UserError, match="license file 'NOTICE' is not in pkg-1.0.tar.xz"):
        collect_license_texts(cfg, cfg.recipes["pkg"], set())
