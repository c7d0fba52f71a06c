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
"""
import dataclasses
from functools import cached_property

from tasks.core import code
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
    if cfg.tag(dist_name) == "":
        return Component(cfg, dist_name, recipe_name)
    return ForeignComponent(cfg, dist_name, recipe_name)


def cross_recipe(recipe, build, host):
    """The recipe with --build/--host first among its configure words (autotools only)."""
    if recipe["build"] != "autotools":
        return recipe
    words = [f"--build={build.triplet}", f"--host={host.triplet}"] + list(recipe["configure"])
    return dataclasses.replace(recipe, data={**recipe.data, "configure": words})


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
        path = env["PATH"].split(":")
        path.insert(1, f"{self.cross_dist.prefix}/bin")
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
        if "LDFLAGS" in env:
            # tasks/model/flags.py spells the native loader (it stays byte-identical, so
            # the native keys stay); a foreign program needs its platform's
            env["LDFLAGS"] = env["LDFLAGS"].replace(f"/lib/{native.loader}",
                                                    f"/lib/{target.loader}")
        return env
