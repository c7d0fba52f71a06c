"""Platforms in config (issue 16, tasks/model/platforms.py, tasks/model/cross.py): adding
linux/arm64 leaves every linux/amd64 key, folder and task name as it was; a foreign
platform is part of the names, folders and keys of its own builds; names are checked
when loading; a foreign build gets the cross toolchain, --build/--host and the target's
dynamic linker."""
import os

import pytest

from conftest import run_doit
from fixtures import HELLO, LIBGREET, FixtureProject
from tasks.build.key import component_key
from tasks.core.errors import UserError
from tasks.model import cross
from tasks.model.config import load_config
from tasks.model.platforms import PLATFORMS, native

NATIVE = native()
pytestmark = pytest.mark.skipif(NATIVE != "linux/amd64", reason="these expectations are "
                                "written for an amd64 build machine (arm64 is the foreign one)")


def _project(tmp_path):
    """tc (a stand-in toolchain), core: libgreet + an autotools tool, app: hello (uses
    core, built by tc), xtc: the cross toolchain (one component, never run here)."""
    proj = FixtureProject(tmp_path / "proj")
    proj.add_package("libgreet", "1.0", LIBGREET)
    proj.add_package("cc", "1.0", {"Makefile": "all:\ninstall:\n"})
    proj.add_package("xgcc", "1.0", {"Makefile": "all:\ninstall:\n"})
    proj.add_package("tool", "1.0", {"configure": "#!/bin/sh\n"}, build="autotools",
                     configure=["--disable-nls"])
    proj.add_package("hello", "1.0", HELLO, depends=["libgreet"])
    proj.add_distribution("tc", ["cc"])
    proj.add_distribution("core", ["libgreet", "tool"])
    proj.add_distribution("app", ["hello"], uses=["core"], toolchain="tc")
    return proj


def _load(config):
    os.environ["DAPPDEPS_CONFIG"] = str(config)
    try:
        return load_config()
    finally:
        del os.environ["DAPPDEPS_CONFIG"]


def _native_view(cfg):
    """task, stage folder, log, work folder and key of every native component."""
    out = {}
    for dist in cfg.distributions.values():
        if NATIVE not in dist.platforms:
            continue
        for name in dist.components:
            comp = cross.component(cfg.for_platform(NATIVE), dist.name, name)
            out[comp.task] = (comp.stage_dir, comp.log_path, comp.work_dir,
                              component_key(comp).key)
    return out


def test_adding_arm64_changes_no_amd64_key_folder_or_task(tmp_path):
    proj = _project(tmp_path)
    before = _native_view(_load(proj.write_config()))
    assert "build:app/hello" in before
    assert before["build:app/hello"][0] == proj.cache / "stage/app/hello"
    assert before["build:app/hello"][1] == proj.cache / "logs/app/hello.log"
    proj.add_distribution("xtc", ["xgcc"], platforms=["linux/amd64"])
    cfg = _load(proj.write_config(platforms=["linux/amd64", "linux/arm64"],
                                  cross={"linux/arm64": "xtc"}))
    after = _native_view(cfg)
    assert {t: v for t, v in after.items() if not t.startswith("build:xtc/")} == before
    # the arm64 builds: their own names, folders and keys
    arm = cfg.for_platform("linux/arm64")
    hello = cross.component(arm, "app", "hello")
    assert hello.task == "build:app/hello@arm64"
    assert hello.stage_dir == proj.cache / "stage/app@arm64/hello"
    assert hello.log_path == proj.cache / "logs/app@arm64/hello.log"
    assert hello.work_dir == proj.cache / "work/app@arm64/hello"
    assert component_key(hello).key != before["build:app/hello"][3]
    # it mounts the cross toolchain (native folders) and the arm64 tc and core
    assert list(hello.foreign_inputs) == ["xtc", "core", "tc"]
    assert arm.stage_of("xtc", "xgcc") == proj.cache / "stage/xtc/xgcc"
    assert arm.stage_of("tc", "cc") == proj.cache / "stage/tc@arm64/cc"
    assert arm.assembled_manifest("core") == proj.cache / "stage/core@arm64.manifest.json"


def test_doit_list_shows_the_platform(tmp_path):
    proj = _project(tmp_path)
    proj.add_distribution("xtc", ["xgcc"], platforms=["linux/amd64"])
    config = proj.write_config(platforms=["linux/amd64", "linux/arm64"],
                               cross={"linux/arm64": "xtc"})
    listed = run_doit(config, "list", "--all", "--quiet", check=True).out.split()
    for task in ("build:core/libgreet", "build:core/libgreet@arm64", "build:app/hello@arm64",
                 "assemble:app", "assemble:app@arm64", "check:app@arm64", "build:xtc/xgcc"):
        assert task in listed, task
    assert "build:xtc/xgcc@arm64" not in listed and "assemble:xtc@arm64" not in listed


def test_foreign_environment_and_configure(tmp_path):
    proj = _project(tmp_path)
    proj.add_distribution("xtc", ["xgcc"], platforms=["linux/amd64"])
    cfg = _load(proj.write_config(platforms=["linux/amd64", "linux/arm64"],
                                  cross={"linux/arm64": "xtc"}))
    arm = cfg.for_platform("linux/arm64")
    hello = cross.component(arm, "app", "hello")
    env = hello.environment()
    xtc, tc = cfg.distributions["xtc"].prefix, cfg.distributions["tc"].prefix
    assert env["CC"] == f"{xtc}/bin/aarch64-linux-gnu-gcc"
    assert env["AR"] == f"{xtc}/bin/aarch64-linux-gnu-ar"
    assert env["HOST_TRIPLET"] == "aarch64-linux-gnu" and env["BUILD_TRIPLET"] == "x86_64-linux-gnu"
    assert env["TARGET_LOADER"] == f"{tc}/lib/ld-linux-aarch64.so.1"
    assert f"--dynamic-linker={tc}/lib/ld-linux-aarch64.so.1" in env["LDFLAGS"]
    assert "ld-linux-x86-64" not in env["LDFLAGS"]
    assert "-Wl,--disable-new-dtags" in env["LDFLAGS"]            # still DT_RPATH
    assert env["DAPPDEPS_PLATFORM"] == "linux/arm64"
    native_env = cross.component(cfg, "app", "hello").environment()
    assert "ld-linux-x86-64.so.2" in native_env["LDFLAGS"] and "HOST_TRIPLET" not in native_env
    tool = cross.component(arm, "core", "tool")
    script = tool.script({s.id: s.primary for s in tool.recipe.sources})
    assert ('"$SRCDIR/configure" --prefix="$PREFIX" "--build=x86_64-linux-gnu" '
            '"--host=aarch64-linux-gnu" "--disable-nls"') in script
    native_tool = cross.component(cfg, "core", "tool")
    assert "--host=" not in native_tool.script({s.id: s.primary for s in native_tool.recipe.sources})


@pytest.mark.parametrize("extra, field, words", [
    ({"platforms": ["linux/riscv64"]}, "platforms", "linux/riscv64' is not a platform"),
    ({"platforms": ["linux/amd64", "linux/amd64"]}, "platforms", "names linux/amd64 twice"),
    ({"platforms": ["linux/amd64", "linux/arm64"]}, "distributions.tc.platforms",
     "names no cross toolchain"),
    ({"platforms": ["linux/amd64", "linux/arm64"], "cross": {"linux/arm64": "nope"}},
     "cross.linux/arm64", "'nope' is not a distribution"),
    ({"platforms": ["linux/amd64", "linux/arm64"], "cross": {"linux/arm64": "core"}},
     "distributions.core.platforms", "built for linux/amd64 only"),
    ({"cross": {"arm64": "core"}}, "cross", "'arm64' is not a platform"),
    ({"platforms": ["linux/arm64"]},
     "distributions.tc.platforms", "for now every distribution is built for this machine"),
])
def test_platform_names_are_checked_when_loading(tmp_path, extra, field, words):
    proj = _project(tmp_path)
    with pytest.raises(UserError) as caught:
        _load(proj.write_config(**extra))
    text = caught.value.render()
    assert field in text and words in text, text


def test_a_distribution_uses_only_what_is_built_for_its_platforms(tmp_path):
    proj = _project(tmp_path)
    proj.add_distribution("xtc", ["xgcc"], platforms=["linux/amd64"])
    proj.distributions["app"]["platforms"] = ["linux/amd64", "linux/arm64"]
    proj.distributions["core"]["platforms"] = ["linux/amd64", "linux/nope"]
    with pytest.raises(UserError) as caught:
        _load(proj.write_config(cross={"linux/arm64": "xtc"}))
    assert "distributions.core.platforms" in caught.value.render()
    proj.distributions["core"]["platforms"] = ["linux/amd64"]
    with pytest.raises(UserError) as caught:
        _load(proj.write_config(cross={"linux/arm64": "xtc"}))
    text = caught.value.render()
    assert "'app' is built for linux/arm64 and uses 'core', which is not" in text


def test_the_platform_table():
    assert PLATFORMS["linux/arm64"].loader == "ld-linux-aarch64.so.1"
    assert PLATFORMS["linux/arm64"].elf_machine == "EM_AARCH64"
    assert PLATFORMS["linux/amd64"].loader == "ld-linux-x86-64.so.2"
    assert native("aarch64") == "linux/arm64" and native("x86_64") == "linux/amd64"
    assert native("riscv64") is None


def test_per_platform_fields_replace_the_recipes_own_for_that_platform_only(tmp_path):
    """A recipe's per_platform fields (the toolchain's: the loader it names) are used by
    its builds for that platform; the native script and key do not see them, so adding
    them changes no amd64 key."""
    proj = _project(tmp_path)
    proj.add_distribution("xtc", ["xgcc"], platforms=["linux/amd64"])
    config = dict(platforms=["linux/amd64", "linux/arm64"], cross={"linux/arm64": "xtc"})
    before = _native_view(_load(proj.write_config(**config)))
    tool = dict(proj.recipes["tool"])
    tool["environment"] = {"TOOL_LOADER": "ld-linux-x86-64.so.2"}
    tool["per_platform"] = {"linux/arm64": {
        "environment": {"TOOL_LOADER": "ld-linux-aarch64.so.1"},
        "configure": ["--disable-nls", "--with-arm64"],
        "smoke": ["$PREFIX/bin/tool --arm64"],
        "append": {"make": ["V=1"], "post_install": "echo arm64 > $PREFIX/machine\n"}}}
    proj.write_recipe({**tool, "per_platform": {}})
    plain = _native_view(_load(proj.write_config(**config)))
    proj.write_recipe(tool)
    cfg = _load(proj.write_config(**config))
    assert _native_view(cfg) == plain
    assert plain["build:core/tool"] != before["build:core/tool"]   # its own environment
    native_tool = cross.component(cfg, "core", "tool")
    native_script = native_tool.script({s.id: s.primary for s in native_tool.recipe.sources})
    assert 'export TOOL_LOADER="ld-linux-x86-64.so.2"' in native_script
    assert "--with-arm64" not in native_script and native_tool.recipe.smoke == ()
    arm_tool = cross.component(cfg.for_platform("linux/arm64"), "core", "tool")
    script = arm_tool.script({s.id: s.primary for s in arm_tool.recipe.sources})
    assert 'export TOOL_LOADER="ld-linux-aarch64.so.1"' in script
    assert ('"--build=x86_64-linux-gnu" "--host=aarch64-linux-gnu" "--disable-nls" '
            '"--with-arm64"') in script
    assert cfg.for_platform("linux/arm64").recipes["tool"].smoke == ("$PREFIX/bin/tool --arm64",)
    assert 'make -j"$JOBS" "PREFIX=$PREFIX" "V=1"\n' in script
    assert 'make -j"$JOBS" "PREFIX=$PREFIX"\n' in native_script
    assert script.endswith("echo arm64 > $PREFIX/machine\n") and "machine" not in native_script


def test_per_platform_is_not_inherited(tmp_path):
    proj = _project(tmp_path)
    proj.add_distribution("xtc", ["xgcc"], platforms=["linux/amd64"])
    tool = dict(proj.recipes["tool"], per_platform={"linux/arm64": {"configure": ["--arm"]}})
    proj.write_recipe(tool)
    proj.write_recipe({"name": "tool2", "inherit": "tool"})
    proj.distributions["core"]["components"].append("tool2")
    cfg = _load(proj.write_config(platforms=["linux/amd64", "linux/arm64"],
                                  cross={"linux/arm64": "xtc"}))
    arm = cfg.for_platform("linux/arm64")
    assert arm.recipes["tool"]["configure"] == ["--arm"]
    assert arm.recipes["tool2"]["configure"] == ["--disable-nls"]


@pytest.mark.parametrize("over, field, words", [
    ({"linux/riscv64": {"configure": []}}, "per_platform.linux/riscv64",
     "'linux/riscv64' is not a platform"),
    ({"linux/arm64": {"version": "2.0"}}, "per_platform.linux/arm64.version",
     "cannot differ per platform"),
    ({"linux/arm64": {"sources": []}}, "per_platform.linux/arm64.sources",
     "is empty; a recipe needs at least one source"),
    ({"linux/arm64": {"sources": [{"file": "a.whl", "sha256": "0" * 64}]}},
     "per_platform.linux/arm64.sources[0].urls", "has no locations"),
    ({"linux/arm64": {"license": "MIT"}}, "per_platform.linux/arm64.license",
     "cannot differ per platform"),
    ({"linux/arm64": {"depends": []}}, "per_platform.linux/arm64.depends",
     "cannot differ per platform"),
    ({"linux/arm64": {"environment": {"PATH": "/x"}}}, "per_platform.linux/arm64.environment.PATH",
     "set by dappdeps"),
    ({"linux/arm64": {"configure": "--x"}}, "per_platform.linux/arm64.configure", "expected"),
    ({"linux/arm64": "--x"}, "per_platform.linux/arm64", "expected"),
    ({"linux/arm64": {"append": {"environment": {"A": "b"}}}},
     "per_platform.linux/arm64.append.environment", "cannot be appended to"),
    ({"linux/arm64": {"append": ["x"]}}, "per_platform.linux/arm64.append", "expected a mapping"),
    ({"linux/arm64": {"append": {"make": "x"}}}, "per_platform.linux/arm64.append.make", "expected"),
])
def test_per_platform_is_checked_when_loading(tmp_path, over, field, words):
    proj = _project(tmp_path)
    proj.write_recipe(dict(proj.recipes["tool"], per_platform=over))
    with pytest.raises(UserError) as caught:
        _load(proj.write_config())
    text = caught.value.render()
    assert field in text and words in text, text


def test_a_foreign_build_runs_no_program_of_its_own_platform(tmp_path):
    """The prefixes' bin/ (arm64 programs) are not in a foreign build's PATH: only the
    cross toolchain's and the build root's."""
    proj = _project(tmp_path)
    proj.add_distribution("xtc", ["xgcc"], platforms=["linux/amd64"])
    cfg = _load(proj.write_config(platforms=["linux/amd64", "linux/arm64"],
                                  cross={"linux/arm64": "xtc"}))
    native_path = cross.component(cfg, "app", "hello").environment()["PATH"].split(":")
    path = cross.component(cfg.for_platform("linux/arm64"), "app", "hello").environment()["PATH"]
    xtc = cfg.distributions["xtc"].prefix
    assert path.split(":")[0] == f"{xtc}/bin"
    assert native_path[0] == f"{cfg.distributions['app'].prefix}/bin"
    assert [p for p in path.split(":")[1:] if p.startswith(proj.prefix_root)] == []
    assert path.split(":")[1:] == [p for p in native_path if not p.startswith(proj.prefix_root)]


def test_a_configure_of_its_own_gets_no_build_and_host(tmp_path):
    proj = _project(tmp_path)
    proj.add_distribution("xtc", ["xgcc"], platforms=["linux/amd64"])
    proj.write_recipe(dict(proj.recipes["tool"], autoconf=False))
    cfg = _load(proj.write_config(platforms=["linux/amd64", "linux/arm64"],
                                  cross={"linux/arm64": "xtc"}))
    tool = cross.component(cfg.for_platform("linux/arm64"), "core", "tool")
    script = tool.script({s.id: s.primary for s in tool.recipe.sources})
    assert '"$SRCDIR/configure" --prefix="$PREFIX" "--disable-nls"' in script
    assert "--host=" not in script and tool.environment()["CC"].endswith("aarch64-linux-gnu-gcc")


def test_an_emulated_build_has_the_emulator_in_its_key_and_needs_it(tmp_path, monkeypatch):
    """emulated: true (per platform): the build runs its platform's programs (under
    qemu-user); the emulator's identity is in its environment, so in its key, and the
    build refuses to start where they do not run."""
    from tasks.core import emulation
    proj = _project(tmp_path)
    proj.add_distribution("xtc", ["xgcc"], platforms=["linux/amd64"])
    proj.write_recipe(dict(proj.recipes["tool"], per_platform={"linux/arm64": {"emulated": True}}))
    cfg = _load(proj.write_config(platforms=["linux/amd64", "linux/arm64"],
                                  cross={"linux/arm64": "xtc"}))
    arm = cfg.for_platform("linux/arm64")
    tool, hello = cross.component(arm, "core", "tool"), cross.component(arm, "app", "hello")
    expected = emulation.identity(PLATFORMS["linux/arm64"]) or "none"
    assert tool.environment()["DAPPDEPS_EMULATOR"] == expected
    assert "DAPPDEPS_EMULATOR" not in hello.environment()
    assert "DAPPDEPS_EMULATOR" not in cross.component(cfg, "core", "tool").environment()
    monkeypatch.setattr(emulation, "problem", lambda platform, root=None:
                        "no binfmt_misc entry qemu-aarch64 for linux/arm64 programs.")
    refusal = cross.preflight(tool)
    assert refusal.startswith("build:core/tool@arm64 runs linux/arm64 programs while it builds")
    assert "emulated: true" in refusal and "no binfmt_misc entry qemu-aarch64" in refusal
    assert cross.preflight(hello) is None and cross.preflight(cross.component(cfg, "core", "tool")) is None


def test_per_platform_sources_are_fetched_and_keyed_for_their_platform(tmp_path):
    """A prebuilt file per machine (a wheel): the arm64 build takes its own source, the
    fetch tasks know both, the amd64 key and script keep the recipe's own."""
    proj = _project(tmp_path)
    proj.add_distribution("xtc", ["xgcc"], platforms=["linux/amd64"])
    config = dict(platforms=["linux/amd64", "linux/arm64"], cross={"linux/arm64": "xtc"})
    before = _native_view(_load(proj.write_config(**config)))
    sha = proj.add_package("tool-arm64", "1.0", {"configure": "#!/bin/sh\n"})
    arm_source = {"file": "tool-arm64-1.0.tar.gz", "sha256": sha,
                  "urls": [f"{proj.base_url}/tool-arm64-1.0.tar.gz"]}
    proj.write_recipe(dict(proj.recipes["tool"], per_platform={"linux/arm64": {
        "sources": [arm_source], "license_files": ["COPYING.arm64"]}}))
    cfg = _load(proj.write_config(**config))
    assert _native_view(cfg) == before
    assert {"tool-1.0.tar.gz", "tool-arm64-1.0.tar.gz"} <= set(cfg.sources)
    arm_tool = cross.component(cfg.for_platform("linux/arm64"), "core", "tool")
    assert [s.id for s in arm_tool.recipe.sources] == ["tool-arm64-1.0.tar.gz"]
    assert arm_tool.recipe.license_files == ("COPYING.arm64",)
    assert component_key(arm_tool).inputs["sources"][0]["sha256"] == sha
    run = run_doit(proj.write_config(**config), "list", "--all", "--quiet", check=True)
    assert "fetch:tool-arm64-1.0.tar.gz" in run.out.split()


def test_each_platform_sees_only_its_own_per_platform_fields(tmp_path):
    """The native view is resolved when loading; a foreign view starts again from the
    recipe's own fields, never from the native one's (and never applies them twice)."""
    proj = _project(tmp_path)
    proj.add_distribution("xtc", ["xgcc"], platforms=["linux/amd64"])
    proj.write_recipe(dict(proj.recipes["tool"], per_platform={
        NATIVE: {"append": {"configure": ["--native-only"]}}}))
    cfg = _load(proj.write_config(platforms=["linux/amd64", "linux/arm64"],
                                  cross={"linux/arm64": "xtc"}))
    assert cfg.recipes["tool"]["configure"] == ["--disable-nls", "--native-only"]
    assert cfg.recipes["tool"].for_platform(NATIVE)["configure"] == ["--disable-nls", "--native-only"]
    assert cfg.for_platform("linux/arm64").recipes["tool"]["configure"] == ["--disable-nls"]
    assert cross.component(cfg.for_platform("linux/arm64"), "core", "tool").recipe["configure"] \
        == ["--build=x86_64-linux-gnu", "--host=aarch64-linux-gnu", "--disable-nls"]
