"""A component built for a foreign platform (config `platforms:`, issue 16): cross-compiled
on the build machine by the cross toolchain `cross.<platform>` names.

The native build is left exactly as it was: tasks/model/component.py, flags.py and every
module of tasks/build/key.py's ENGINE_MODULES are the same files, so every amd64 key stays
what it was (tests/test_platforms.py). What a foreign build changes is added on top, here:
  - its folders and task name carry `@<arch>`: the configuration view
    (Config.for_platform) puts its outputs in cache/stage/<dist>@<arch>/, this class its
    work folder, log and task name;
  - the cross toolchain's distribution is mounted read-only at its prefix, like the
    toolchain (and its content digests are in the key, like the toolchain's);
  - the environment: the cross tools as CC, CXX, AR, ... (<triplet>-gcc), the target's
    dynamic linker in place of the native one, BUILD_TRIPLET/HOST_TRIPLET, CROSS_COMPILE
    and KERNEL_ARCH (linux's headers), PKG_CONFIG_LIBDIR (never the build root's .pc
    files), and DAPPDEPS_PLATFORM with the digest of this code (DAPPDEPS_CROSS_CODE): the
    environment is in the key, so a foreign key differs from the native one and changes
    when this code does;
  - autotools builds get `--build=<native triplet> --host=<target triplet>` before the
    recipe's own configure words. Both are given: autoconf then sets cross_compiling=yes
    without trying to run a test program, which under binfmt_misc + qemu would succeed
    and make the output depend on the host's emulation.

A cross toolchain distribution (a value of config `cross:`, e.g. cross-aarch64) is built
for the build machine like any native one; what its recipes add is the target they
compile for (CrossToolchainComponent): TARGET_TRIPLET, KERNEL_ARCH, SYSROOT (the target's
headers and libraries inside the cross prefix, laid out as the target's toolchain prefix
is at run time), TARGET_PREFIX (that toolchain prefix) and TARGET_LOADER (the dynamic
linker every program it links asks for).
"""
import dataclasses
from functools import cached_property

from tasks.core import code, emulation
from tasks.core.errors import UserError
from tasks.model.component import Component
from tasks.model.platforms import PLATFORMS

# what shapes a foreign build beyond the native engine (tasks/build/key.py ENGINE_MODULES)
CROSS_MODULES = ("tasks.model.cross", "tasks.model.platforms")
# <triplet>-<tool> of the cross toolchain, by the variable autotools and make read
TOOLS = {"CC": "gcc", "CXX": "g++", "CPP": "gcc -E", "AR": "ar", "RANLIB": "ranlib",
         "AS": "as", "LD": "ld", "NM": "nm", "STRIP": "strip", "OBJCOPY": "objcopy",
         "OBJDUMP": "objdump", "READELF": "readelf"}


def component(cfg, dist_name, recipe_name):
    """The component of `cfg`'s platform: a plain Component when native."""
    if cross_target(cfg, dist_name):
        return CrossToolchainComponent(cfg, dist_name, recipe_name)
    if cfg.tag(dist_name) == "":
        return Component(cfg, dist_name, recipe_name)
    return ForeignComponent(cfg, dist_name, recipe_name)


def preflight(comp):
    """None, or why `comp`'s build cannot run on this machine: a build for another
    platform that runs its programs (recipe `emulated`) where they do not run."""
    if not isinstance(comp, ForeignComponent) or not comp.recipe["emulated"]:
        return None
    found = emulation.problem(comp.platform)
    return None if found is None else (
        f"{comp.task} runs {comp.platform.name} programs while it builds (its recipe says "
        f"emulated: true), and they do not run here: {found}")


def cross_target(cfg, dist_name):
    """The Platform a cross toolchain distribution compiles for; None for any other."""
    return next((PLATFORMS[p] for p, name in cfg.cross.items() if name == dist_name), None)


def sysroot(dist, target):
    """Where a cross toolchain keeps the target's headers and libraries: GCC's tooldir
    (<prefix>/<triplet>) holds it, so one prefix can hold cross toolchains for several
    targets without their files meeting."""
    return f"{dist.prefix}/{target.triplet}/sysroot"


def target_toolchain(cfg):
    """The toolchain distribution programs of a foreign platform load their libc from at
    run time: the one every distribution built by a toolchain names (`toolchain:`); None
    when none does (then a recipe using $TARGET_PREFIX fails on the unset variable)."""
    names = sorted({d.toolchain for d in cfg.distributions.values() if d.toolchain})
    if not names:
        return None
    if len(names) != 1:
        raise UserError(f"a cross toolchain compiles for the toolchain the other distributions "
                        f"are built by, and they name {len(names)} ({', '.join(names) or 'none'}).",
                        cfg.path, "cross")
    return cfg.distributions[names[0]]


def target_environment(cfg, dist_name):
    """What the recipes of a cross toolchain distribution compile for."""
    target = cross_target(cfg, dist_name)
    dist, toolchain = cfg.distributions[dist_name], target_toolchain(cfg)
    env = {"TARGET_TRIPLET": target.triplet, "KERNEL_ARCH": target.kernel_arch,
           "SYSROOT": sysroot(dist, target)}
    if toolchain:
        env.update({"TARGET_PREFIX": toolchain.prefix,
                    "TARGET_LOADER": f"{toolchain.prefix}/lib/{target.loader}"})
    return env


def cross_recipe(recipe, build, host):
    """The recipe with --build/--host first among its configure words (autoconf only)."""
    if recipe["build"] != "autotools" or not recipe["autoconf"]:
        return recipe
    words = [f"--build={build.triplet}", f"--host={host.triplet}"] + list(recipe["configure"])
    return dataclasses.replace(recipe, data={**recipe.data, "configure": words})


class CrossToolchainComponent(Component):
    """A component of a cross toolchain distribution: a native build that is told its
    target. (No code digest in its environment: the values are what shape it.)"""

    def environment(self):
        env = super().environment()
        env.update(target_environment(self.cfg, self.dist.name))
        return env


class ForeignComponent(Component):
    def __init__(self, cfg, dist_name, recipe_name):
        super().__init__(cfg, dist_name, recipe_name)
        self.platform = cfg.target()
        self.native = PLATFORMS[cfg.native_platform]
        self.label = cfg.label(dist_name)
        self.task = f"build:{dist_name}/{recipe_name}{cfg.tag(dist_name)}"
        self.recipe = cross_recipe(self.recipe, self.native, self.platform)
        self.cross_dist = cfg.distributions[cfg.cross[cfg.platform]]

    @property
    def work_dir(self):
        return self.cfg.cache / "work" / self.label / self.name

    @property
    def log_path(self):
        return self.cfg.cache / "logs" / self.label / f"{self.name}.log"

    @cached_property
    def foreign_inputs(self):
        """The native build's, and first the whole cross toolchain (it is the compiler)."""
        inputs = {self.cross_dist.name: list(self.cross_dist.components)}
        inputs.update(super().foreign_inputs)
        return inputs

    def environment(self):
        env = super().environment()
        target, native = self.platform, self.native
        tools = f"{self.cross_dist.prefix}/bin/{target.triplet}-"
        toolchain = (self.cfg.distributions[self.dist.toolchain] if self.dist.toolchain
                     else self.dist)
        own = [self.dist.prefix] + [self.cfg.distributions[d].prefix for d in self.used_dists]
        # The prefixes' bin/ hold programs of the target (bash, sed, as ... for arm64):
        # a build must not run them (binfmt_misc would hand them to qemu, so the output
        # would depend on the host's emulation, and a build tool would be an arm64 one).
        # The cross compiler and the build root's tools are what a build runs.
        ours = self.cfg.prefix_root + "/"
        path = [f"{self.cross_dist.prefix}/bin"] + [p for p in env["PATH"].split(":")
                                                    if not p.startswith(ours)]
        env.update({
            "PATH": ":".join(path),
            "DAPPDEPS_PLATFORM": target.name,
            "DAPPDEPS_CROSS_CODE": code.digest(*CROSS_MODULES),
            "BUILD_TRIPLET": native.triplet, "HOST_TRIPLET": target.triplet,
            "CROSS_COMPILE": tools, "KERNEL_ARCH": target.kernel_arch,
            "TARGET_LOADER": f"{toolchain.prefix}/lib/{target.loader}",
            "PKG_CONFIG_LIBDIR": ":".join(f"{p}/lib/pkgconfig" for p in own),
            # programs a build compiles and runs on the build machine (generators)
            "CC_FOR_BUILD": "gcc", "CXX_FOR_BUILD": "g++",
        })
        # also without `toolchain:` (the toolchain distribution itself): its recipes set
        # their own CC in `environment`, which the script exports after this
        env.update({var: tools + tool for var, tool in TOOLS.items()})
        if self.recipe["emulated"]:
            # what runs its platform's programs while it builds (None: nothing here)
            env["DAPPDEPS_EMULATOR"] = emulation.identity(target) or "none"
        if "LDFLAGS" in env:
            # tasks/model/flags.py spells the native loader (it stays byte-identical, so
            # the native keys stay); a foreign program needs its platform's
            env["LDFLAGS"] = env["LDFLAGS"].replace(f"/lib/{native.loader}",
                                                    f"/lib/{target.loader}")
        return env
