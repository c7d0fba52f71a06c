"""The ELF audit of a distribution (check:<dist>): its programs and libraries load only
what the dappdeps prefixes hold.

Every executable and shared library must have its interpreter and every RPATH/RUNPATH
inside the dappdeps prefixes, every DT_NEEDED must resolve inside them (the way the
prefix's ld.so would look), and every symbol version it needs (.gnu.version_r: GLIBC_2.34
of libc.so.6, ...) must be defined by the library it resolves to (the toolchain's glibc
for libc.so.6): otherwise ld.so stops with "version `GLIBC_2.xx' not found".
Every one must also be of the platform the distribution is built for (cfg.target(),
tasks/model/platforms.py): its ELF machine (EM_X86_64, EM_AARCH64) and class, and an
interpreter named as that platform's dynamic linker (ld-linux-x86-64.so.2,
ld-linux-aarch64.so.1). A file of another machine would only fail where it runs, or,
with qemu registered in binfmt_misc, run emulated and pass every smoke test. The one
exception: a cross toolchain (config `cross:`) ships its target's libraries in its
tooldir; those are audited for the target, their paths looked up in its sysroot.
"""
import posixpath
import re

from tasks.core import canonical
from tasks.core import elf
from tasks.model import cross


def _assembled(cfg, name):
    return canonical.load(cfg.assembled_manifest(name))


class Tree:
    """All paths of some distributions, by absolute path, with symlinks followed."""

    def __init__(self, cfg, names):
        self.cfg = cfg
        self.entries = {}
        for name in names:
            dist = cfg.distributions[name]
            for entry in _assembled(cfg, name)["entries"]:
                self.entries[f"{dist.prefix}/{entry['path']}"] = (name, entry)

    def resolve(self, path, depth=0):
        path = posixpath.normpath(path)
        found = self.entries.get(path)
        if found is None:
            # A parent folder may be a symlink (lib64 -> lib).
            parent, base = posixpath.split(path)
            if parent != "/" and depth < 20:
                real_parent = self.resolve(parent, depth + 1)
                if real_parent and real_parent != parent:
                    return self.resolve(posixpath.join(real_parent, base), depth + 1)
            return None
        entry = found[1]
        if entry["type"] == "symlink" and depth < 20:
            target = entry["target"]
            target = target if target.startswith("/") else posixpath.join(posixpath.dirname(path), target)
            return self.resolve(target, depth + 1)
        return path

    def host_path(self, path):
        """Where the file at an absolute in-prefix path (resolved) lies in cache/stage."""
        name, entry = self.entries[path]
        return self.cfg.tree_of(name, entry["component"]) / entry["path"]


def _version_key(version):
    """GLIBC_2.3.4 -> (2, 3, 4), for naming the newest version a library defines."""
    return tuple(int(n) for n in re.findall(r"\d+", version))


def audit(cfg, dist_name):
    """Problems (one line each) and the number of ELF files looked at."""
    dist = cfg.distributions[dist_name]
    tree = Tree(cfg, cfg.closure(dist_name))
    root = cfg.prefix_root + "/"
    tc = cfg.distributions[dist.toolchain] if dist.toolchain else dist
    default_dirs = [f"{tc.prefix}/lib"]
    target = cfg.target()
    # a cross toolchain (cfg.cross) also holds files built for its target
    cross_target = cross.cross_target(cfg, dist_name)
    problems, count = [], 0
    defined = {}                            # library path -> the versions it defines
    for entry in _assembled(cfg, dist_name)["entries"]:
        if entry["type"] != "file":
            continue
        host_path = cfg.tree_of(dist_name, entry["component"]) / entry["path"]
        if not elf.is_elf(host_path):
            continue
        info = elf.read(host_path)
        if info is None:
            continue
        count += 1
        where = f"{dist.prefix}/{entry['path']}"
        origin = posixpath.dirname(where)
        # A cross toolchain's target file: its run-time paths are looked up in the sysroot
        # (`under`), where the target's toolchain prefix is laid out as on the target.
        file_target = _target_file(where, info, dist, cross_target)
        under, file_dirs = "", default_dirs
        if file_target:
            under = cross.sysroot(dist, file_target)
            toolchain = cross.target_toolchain(cfg)
            file_dirs = ([f"{under}{toolchain.prefix}/lib"] if toolchain else []) + [
                f"{dist.prefix}/{file_target.triplet}/lib"]
        problems += _platform_problems(where, info, file_target or target)
        if info.interp and not (info.interp.startswith(root) and tree.resolve(under + info.interp)):
            problems.append(f"{where}: interpreter {info.interp} is not inside the dappdeps prefixes"
                            + (f" (looked up in {under})" if under else ""))
        # DT_RUNPATH is searched after LD_LIBRARY_PATH, so an image's LD_LIBRARY_PATH
        # could redirect the libraries (werf issue #4745): only DT_RPATH is allowed.
        # The one exception is glibc's gconv modules' [$ORIGIN]: they find their
        # sibling helper modules (libKSC.so, ...) and nothing else.
        if info.runpath and info.runpath != ["$ORIGIN"]:
            problems.append(f"{where}: RUNPATH {':'.join(info.runpath)} (LD_LIBRARY_PATH "
                            "beats it): link with -Wl,--disable-new-dtags for DT_RPATH")
        dirs = []
        for kind, paths in (("RPATH", info.rpath), ("RUNPATH", info.runpath)):
            for raw in paths:
                path = raw.replace("$ORIGIN", origin).replace("${ORIGIN}", origin)
                if not path.startswith(root):
                    problems.append(f"{where}: {kind} {raw} points outside the dappdeps prefixes")
                dirs.append(path if "ORIGIN" in raw else under + path)
        search = dirs + file_dirs + ([under + posixpath.dirname(info.interp)] if info.interp else [])
        if info.kind == "dyn" and not info.interp:
            # A library is loaded into programs of this distribution, whose RPATH
            # covers the distribution's own lib/ (tasks/model/flags.py).
            search += file_dirs if file_target else [f"{dist.prefix}/lib"]
        resolved = {}
        for needed in info.needed:
            found = next(filter(None, (tree.resolve(f"{d}/{needed}") for d in search)), None)
            if found is None:
                problems.append(f"{where}: needs {needed}, not found in {':'.join(dict.fromkeys(search))}")
            resolved[needed] = found
        problems += _missing_versions(tree, where, host_path, resolved, defined)
    return problems, count


def _target_file(where, info, dist, target):
    """The cross target (a Platform) when `where` is one of a cross toolchain's files built
    for it: of its machine, in GCC's tooldir (<prefix>/<triplet>/: the sysroot, libstdc++,
    libgcc_s) or its libgcc folder (<prefix>/lib/gcc/<triplet>/); else None. Anywhere
    else a file of another machine stays a problem."""
    if target is None or (info.machine, info.elfclass) != (target.elf_machine, target.elf_class):
        return None
    inside = (f"{dist.prefix}/{target.triplet}/", f"{dist.prefix}/lib/gcc/{target.triplet}/")
    return target if where.startswith(inside) else None


def _platform_problems(where, info, target):
    """A file of another machine, or one asking for another platform's dynamic linker."""
    problems = []
    if (info.machine, info.elfclass) != (target.elf_machine, target.elf_class):
        problems.append(f"{where}: machine {info.machine} ({info.elfclass}-bit), not "
                        f"{target.name}'s {target.elf_machine} ({target.elf_class}-bit)")
    if info.interp and posixpath.basename(info.interp) != target.loader:
        problems.append(f"{where}: interpreter {info.interp} is not {target.name}'s "
                        f"dynamic linker ({target.loader})")
    return problems


def _missing_versions(tree, where, host_path, resolved, defined):
    """Problems for the symbol versions host_path needs that the library it resolves to
    does not define. A library without version definitions is not checked: ld.so only
    warns ("no version information available") there. `defined` caches by library."""
    problems = []
    for lib, versions in sorted(elf.needed_versions(host_path).items()):
        path = resolved.get(lib)
        if path is None:
            continue                        # not found, or not a DT_NEEDED: said above
        if path not in defined:
            defined[path] = elf.defined_versions(tree.host_path(path))
        if not defined[path]:
            continue
        for version in sorted(versions - defined[path], key=_version_key):
            newest = max((v for v in defined[path] if v.split("_")[0] == version.split("_")[0]
                          and _version_key(v)), key=_version_key, default=None)
            problems.append(f"{where}: needs symbol version {version} of {lib}, which {path} "
                            f"does not define" + (f" (its newest is {newest})" if newest else ""))
    return problems
