"""Compiler flags shared by every component of a distribution built by a toolchain.

Recipes never spell these out (Omnibus's with_standard_compiler_flags is the
model): a distribution with `toolchain: <name>` in config.yaml gets the
toolchain's gcc, and every program it links
  - uses the toolchain's dynamic linker (the toolchain's gcc defaults to it),
  - finds its libraries through DT_RPATH into the dappdeps prefixes. RPATH, not
    RUNPATH (--disable-new-dtags): RUNPATH loses to LD_LIBRARY_PATH, so a base
    image that sets LD_LIBRARY_PATH could redirect our programs to its own libs.
"""


def compiler_env(cfg, dist):
    if not dist.toolchain:
        return {}
    tc = cfg.distributions[dist.toolchain]
    libdirs = [f"{dist.prefix}/lib"]
    for name in dist.uses:
        used = cfg.distributions[name]
        libdirs.append(f"{used.prefix}/lib")
    rpath = ":".join(dict.fromkeys(libdirs))
    return {
        "CC": f"{tc.prefix}/bin/gcc",
        "CXX": f"{tc.prefix}/bin/g++",
        "CPP": f"{tc.prefix}/bin/gcc -E",
        "AR": f"{tc.prefix}/bin/ar",
        "RANLIB": f"{tc.prefix}/bin/ranlib",
        "CFLAGS": "-O2",
        "CXXFLAGS": "-O2",
        "CPPFLAGS": f"-I{dist.prefix}/include",
        "LDFLAGS": f"-L{dist.prefix}/lib -Wl,--disable-new-dtags -Wl,-rpath,{rpath} "
                   f"-Wl,--dynamic-linker={tc.prefix}/lib/ld-linux-x86-64.so.2",
        "PKG_CONFIG_PATH": f"{dist.prefix}/lib/pkgconfig",
    }
