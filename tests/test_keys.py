"""Keys of exactly the build inputs (tasks/build/key.py, issue 14): metadata is not in
them, run-time use is not a build input, patches count by path and content, and a clean
rebuild that gives the same bytes does not rebuild its dependents."""
import json

from conftest import run_doit
from fixtures import HELLO, LIBGREET, FixtureProject


def _two_distributions(tmp_path):
    """core: libgreet, tool (independent). app: hello (depends on core's libgreet),
    uses core at run time."""
    proj = FixtureProject(tmp_path / "proj")
    proj.add_package("libgreet", "1.0", LIBGREET)
    proj.add_package("tool", "1.0", {"Makefile": "all:\n\ttrue\ninstall:\n\tmkdir -p $(PREFIX)/share && echo v1 > $(PREFIX)/share/tool\n"})
    # hello links core's libgreet statically: core's prefix, not its own
    hello = dict(HELLO, Makefile=HELLO["Makefile"].replace("$(PREFIX)/include", "$(CORE)/include")
                 .replace("$(PREFIX)/lib", "$(CORE)/lib"))
    proj.add_package("hello", "1.0", hello, depends=["libgreet"],
                     make=["PREFIX=$PREFIX", "CORE=$PREFIX_CORE"])
    proj.add_distribution("core", ["libgreet", "tool"])
    proj.add_distribution("app", ["hello"], uses=["core"])
    return proj, proj.write_config()


def test_a_run_time_use_changing_recompiles_nothing_that_does_not_depend_on_it(tmp_path):
    proj, config = _two_distributions(tmp_path)
    run_doit(config, "assemble:app", "assemble:core", check=True)
    key = json.loads((proj.cache / "stage/app/hello/key.json").read_text())
    assert list(key["inputs"]["inputs"]) == ["core"]
    assert list(key["inputs"]["inputs"]["core"]) == ["libgreet"]     # not tool
    proj.add_package("tool", "1.0", {"Makefile": "all:\n\ttrue\ninstall:\n\tmkdir -p $(PREFIX)/share && echo v2 > $(PREFIX)/share/tool\n"})
    run = run_doit(config, "assemble:app", "assemble:core", check=True)
    assert run.ran() == ["build:core/tool"]
    assert "build:app/hello" in run.skipped()
    # what it depends on does count
    files = dict(LIBGREET, **{"greet.c": LIBGREET["greet.c"].replace("GREETING", "CHANGED")})
    proj.add_package("libgreet", "1.0", files)
    run = run_doit(config, "assemble:app", check=True)
    assert run.ran() == ["build:app/hello", "build:core/libgreet"]
    assert "inputs changed (core)" in run.err


def test_description_homepage_license_and_a_mirror_url_rebuild_nothing(tmp_path):
    proj, config = _two_distributions(tmp_path)
    run_doit(config, "assemble:app", "assemble:core", check=True)
    before = json.loads((proj.cache / "stage/core.manifest.json").read_text())
    recipe = dict(proj.recipes["libgreet"], description="a new description",
                  homepage="https://example.invalid/", license="Apache-2.0")
    source = dict(recipe["sources"][0])
    source["urls"] = ["http://127.0.0.1:9/mirror/" + source["file"]] + source["urls"]
    recipe["sources"] = [source]
    proj.write_recipe(recipe)
    run = run_doit(config, "assemble:app", "assemble:core", check=True)
    assert run.ran() == []
    assert "assemble:core" in run.ran("assemble:")
    after = json.loads((proj.cache / "stage/core.manifest.json").read_text())
    libgreet = next(c for c in after["components"] if c["name"] == "libgreet")
    assert libgreet["description"] == "a new description" and libgreet["license"] == "Apache-2.0"
    assert libgreet["sources"][0]["urls"][0].startswith("http://127.0.0.1:9/mirror/")
    assert after["entries"] == before["entries"]


def test_clean_rebuild_of_a_dependency_rebuilds_it_only(tmp_path):
    proj, config = _two_distributions(tmp_path)
    run_doit(config, "assemble:app", check=True)
    run_doit(config, "clean", "build:core/libgreet", check=True)
    run = run_doit(config, "assemble:app", check=True)
    assert run.ran() == ["build:core/libgreet"]
    assert "build:app/hello" in run.skipped()


def test_patches_count_by_path_and_content(tmp_path):
    proj = FixtureProject(tmp_path / "proj")
    for folder in ("one", "two"):
        (proj.root / "recipes" / folder).mkdir()
        (proj.root / "recipes" / folder / "fix.patch").write_text("")
    proj.add_package("lib", "1.0", {"Makefile": "all:\ninstall:\n\tmkdir -p $(PREFIX)\n"},
                     patches=["one/fix.patch", "two/fix.patch"])
    proj.add_distribution("d", ["lib"])
    config = proj.write_config()
    run_doit(config, "build:d/lib", check=True)
    key = json.loads((proj.cache / "stage/d/lib/key.json").read_text())
    assert [p[0] for p in key["inputs"]["patches"]] == ["one/fix.patch", "two/fix.patch"]
    # the second of two patches with one base name changes: the key changes
    (proj.root / "recipes/two/fix.patch").write_text(
        "--- a/NEW\n+++ b/NEW\n@@ -0,0 +1 @@\n+new\n")
    run = run_doit(config, "build:d/lib", check=True)
    assert run.ran() == ["build:d/lib"] and "patches changed" in run.err
