"""The cross toolchain distribution (config `cross:`, docs/toolchain.md "Cross toolchain"):
its components are native builds told their target (TARGET_TRIPLET, SYSROOT,
TARGET_PREFIX, TARGET_LOADER, KERNEL_ARCH; part of their keys); its smoke tests can name
those; its audit takes files of the target's machine in GCC's tooldir as the target's,
looked up in the sysroot, and nowhere else. The real build is `doit check:cross-aarch64`
(its numbers are in docs/toolchain.md)."""
import os

import pytest

from fixtures import FixtureProject
from test_platforms import _load
from tasks.build.key import component_key
from tasks.core.elf import ElfInfo
from tasks.core.errors import UserError
from tasks.model import cross
from tasks.model.config import load_config
from tasks.verify import audit, smoke


def _project(tmp_path, toolchains=("tc",)):
    """tc (a stand-in toolchain), app (built by it), xtc: the cross toolchain."""
    proj = FixtureProject(tmp_path / "proj")
    for name in ("cc", "xgcc", "hello"):
        proj.add_package(name, "1.0", {"Makefile": "all:\ninstall:\n"},
                         smoke=["$PREFIX/bin/$TARGET_TRIPLET-gcc $SYSROOT$TARGET_LOADER"])
    for tc in toolchains:
        proj.add_distribution(tc, ["cc"])
    proj.add_distribution("app", ["hello"], toolchain=toolchains[0])
    if len(toolchains) > 1:
        proj.add_distribution("app2", ["hello"], toolchain=toolchains[1])
    proj.add_distribution("xtc", ["xgcc"], platforms=["linux/amd64"])
    return proj


def test_a_cross_toolchain_is_told_its_target_and_it_is_in_its_key(tmp_path):
    proj = _project(tmp_path)
    plain = _load(proj.write_config())
    cfg = _load(proj.write_config(cross={"linux/arm64": "xtc"}))
    comp = cross.component(cfg, "xtc", "xgcc")
    assert isinstance(comp, cross.CrossToolchainComponent)
    assert comp.task == "build:xtc/xgcc"           # a native build: no @arm64
    env = comp.environment()
    xtc, tc = cfg.distributions["xtc"].prefix, cfg.distributions["tc"].prefix
    assert {k: env[k] for k in ("TARGET_TRIPLET", "KERNEL_ARCH", "SYSROOT", "TARGET_PREFIX",
                                "TARGET_LOADER")} == {
        "TARGET_TRIPLET": "aarch64-linux-gnu", "KERNEL_ARCH": "arm64",
        "SYSROOT": f"{xtc}/aarch64-linux-gnu/sysroot", "TARGET_PREFIX": tc,
        "TARGET_LOADER": f"{tc}/lib/ld-linux-aarch64.so.1"}
    # no foreign-build variables: it runs here, built by the build root's compiler
    assert "CROSS_COMPILE" not in env and "HOST_TRIPLET" not in env
    before = cross.component(plain, "xtc", "xgcc")
    assert type(before) is cross.Component
    assert component_key(comp).key != component_key(before).key
    # the other distributions' keys do not move
    for dist, name in (("tc", "cc"), ("app", "hello")):
        assert (component_key(cross.component(cfg, dist, name)).key
                == component_key(cross.component(plain, dist, name)).key)


def test_the_target_toolchain_is_at_most_one(tmp_path):
    proj = _project(tmp_path, toolchains=("tc", "tc2"))
    cfg = _load(proj.write_config(cross={"linux/arm64": "xtc"}))
    with pytest.raises(UserError, match=r"name 2 \(tc, tc2\)"):
        cross.component(cfg, "xtc", "xgcc").environment()
    # none: what does not depend on it is still told (tests/test_arm64_checks.py's xtc)
    proj.distributions = {n: d for n, d in proj.distributions.items() if n not in ("app", "app2")}
    env = cross.component(_load(proj.write_config(cross={"linux/arm64": "xtc"})),
                          "xtc", "xgcc").environment()
    assert env["TARGET_TRIPLET"] == "aarch64-linux-gnu" and "TARGET_PREFIX" not in env


def test_smoke_commands_of_a_cross_toolchain_name_the_target(tmp_path):
    proj = _project(tmp_path)
    cfg = _load(proj.write_config(cross={"linux/arm64": "xtc"}))
    xtc, tc = cfg.distributions["xtc"].prefix, cfg.distributions["tc"].prefix
    command = cfg.recipes["xgcc"].smoke[0]
    assert smoke.expand(command, smoke.smoke_environment(cfg, "xtc")) == (
        f"{xtc}/bin/aarch64-linux-gnu-gcc {xtc}/aarch64-linux-gnu/sysroot{tc}/lib/ld-linux-aarch64.so.1")
    # anywhere else they mean nothing and stay as written
    assert smoke.expand(command, smoke.smoke_environment(cfg, "app")) == (
        f"{cfg.distributions['app'].prefix}/bin/$TARGET_TRIPLET-gcc $SYSROOT$TARGET_LOADER")


@pytest.mark.parametrize("path, machine, target", [
    ("aarch64-linux-gnu/sysroot/x/lib/libc.so.6", "EM_AARCH64", True),
    ("aarch64-linux-gnu/lib/libstdc++.so.6.0.33", "EM_AARCH64", True),
    ("lib/gcc/aarch64-linux-gnu/14.2.0/libgcc_s.so", "EM_AARCH64", True),
    ("bin/aarch64-linux-gnu-gcc", "EM_AARCH64", False),            # a tool must run here
    ("aarch64-linux-gnu/bin/ld", "EM_X86_64", False),               # native: audited as such
    ("aarch64-linux-gnuish/lib/libc.so.6", "EM_AARCH64", False),
])
def test_only_the_tooldir_holds_target_files(tmp_path, path, machine, target):
    proj = _project(tmp_path)
    cfg = _load(proj.write_config(cross={"linux/arm64": "xtc"}))
    dist = cfg.distributions["xtc"]
    info = ElfInfo("dyn", None, [], [], [], None, machine, 64)
    arm = cross.cross_target(cfg, "xtc")
    found = audit._target_file(f"{dist.prefix}/{path}", info, dist, arm)
    assert (found is arm) if target else found is None
    # a distribution that is no cross toolchain has no target files
    assert audit._target_file(f"{dist.prefix}/{path}", info, dist, None) is None


def test_the_repository_config_names_cross_aarch64():
    """config.yaml: cross-aarch64 is linux/arm64's cross toolchain, for the toolchain."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cfg = load_config(root)
    assert cfg.cross == {"linux/arm64": "cross-aarch64"}
    env = cross.component(cfg, "cross-aarch64", "cross-gcc").environment()
    prefix = cfg.distributions["cross-aarch64"].prefix
    assert env["SYSROOT"] == f"{prefix}/aarch64-linux-gnu/sysroot"
    assert env["TARGET_LOADER"] == f"{cfg.distributions['toolchain'].prefix}/lib/ld-linux-aarch64.so.1"
