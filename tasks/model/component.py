"""A component: one recipe instantiated in one distribution.

Knows its paths under cache/, the environment of its build and the shell script
the framework renders from the recipe (its key: tasks/build/key.py).
"""
import re
import shlex
from functools import cached_property

from tasks.core.shell import dquote, words
from tasks.model import flags
from tasks.model.schema import env_key_check


# Where a build sees its source and build folders; fixed, so that paths baked into
# outputs do not depend on where the cache lives.
SRC = "/dappdeps/src"
BUILD = "/dappdeps/build"
HOME = "/dappdeps/home"   # never created: a recipe writing to $HOME fails clearly
PATCHES = "/dappdeps/patches"


def prefix_variable(dist_name):
    """The variable holding a distribution's prefix: PREFIX_<NAME> (base -> PREFIX_BASE)."""
    return "PREFIX_" + re.sub(r"[^A-Z0-9_]", "_", dist_name.upper())


class Component:
    def __init__(self, cfg, dist_name, recipe_name):
        self.cfg = cfg
        self.dist = cfg.distributions[dist_name]
        self.recipe = cfg.recipes[recipe_name]
        self.name = recipe_name
        self.task = f"build:{dist_name}/{recipe_name}"

    # ---- paths -------------------------------------------------------------
    @property
    def stage_dir(self):
        return self.cfg.stage_of(self.dist.name, self.name)

    @property
    def tree(self):
        return self.stage_dir / "tree"

    @property
    def manifest_path(self):
        return self.stage_dir / "manifest.json"

    @property
    def stamp_path(self):
        return self.stage_dir / "key.json"

    @property
    def work_dir(self):
        return self.cfg.cache / "work" / self.dist.name / self.name

    @property
    def log_path(self):
        return self.cfg.cache / "logs" / self.dist.name / f"{self.name}.log"

    # ---- graph -------------------------------------------------------------
    @cached_property
    def local_deps(self):
        """Transitive dependencies inside this distribution, in build order."""
        order = self.dist.components
        wanted = set()
        todo = [d for d in self.recipe.depends if d in order]
        while todo:
            dep = todo.pop()
            if dep not in wanted:
                wanted.add(dep)
                todo += [d for d in self.cfg.recipes[dep].depends if d in order]
        return [c for c in order if c in wanted]

    @cached_property
    def foreign_inputs(self):
        """{distribution: [components]} of other distributions a build mounts, read-only
        at their prefixes, in build order: the whole toolchain (it is the compiler), and
        each component of a used distribution that this one or a local dependency
        depends on, with that component's own dependencies. A distribution used only at
        run time (config `uses`) is not mounted and not in the key (tasks/build/key.py)."""
        wanted = {}
        todo = [(self.dist.name, d) for c in [self.name] + self.local_deps
                for d in self.cfg.recipes[c].depends if d not in self.dist.components]
        while todo:
            below, dep = todo.pop()
            owner = self._owner(below, dep)
            if owner is None or dep in wanted.setdefault(owner, set()):
                continue
            wanted[owner].add(dep)
            todo += [(owner, d) for d in self.cfg.recipes[dep].depends]
        if self.dist.toolchain:
            wanted[self.dist.toolchain] = set(self.cfg.distributions[self.dist.toolchain].components)
        order = [d for d in self.used_dists if d in wanted]
        return {d: [c for c in self.cfg.distributions[d].components if c in wanted[d]]
                for d in order}

    def _owner(self, dist_name, comp):
        """The distribution that provides `comp` to `dist_name`: itself or the nearest
        distribution it uses (the same lookup config.py validates depends with)."""
        order = [dist_name]
        for name in order:
            if comp in self.cfg.distributions[name].components:
                return name
            order += [u for u in self.cfg.distributions[name].uses if u not in order]
        return None

    @cached_property
    def used_dists(self):
        """Distributions this one uses, transitively, dependencies first."""
        seen = []

        def visit(name):
            for used in self.cfg.distributions[name].uses:
                visit(used)
                if used not in seen:
                    seen.append(used)
        visit(self.dist.name)
        return seen

    def debian_patch_files(self):
        """[(DebianPatch, its file under the work folder's patches/)], in order: the
        builder puts each patch taken out of the Debian tarball there, script() applies it."""
        return [(p, f"debian/{i:03d}-{p.name.rsplit('/', 1)[-1]}")
                for i, p in enumerate(self.recipe.debian_patches)]

    def applied_debian_patches(self, alternatives):
        """What manifest.json and the assembled manifest record of them (the SBOM reads it):
        [{name, cves, source: the file of the tarball they came from}]."""
        return [{"name": p.name, "cves": list(p.cves),
                 "source": alternatives[self.recipe.debian_source].file}
                for p in self.recipe.debian_patches]

    # ---- environment and script -------------------------------------------
    def environment(self):
        used = [self.cfg.distributions[d] for d in self.used_dists]
        path = [f"{self.dist.prefix}/bin"] + [f"{d.prefix}/bin" for d in reversed(used)]
        path += ["/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin", "/usr/sbin", "/sbin"]
        env = {
            "PREFIX": self.dist.prefix, "SRCDIR": SRC, "BUILDDIR": BUILD,
            "NAME": self.name, "VERSION": self.recipe.version, "DISTRIBUTION": self.dist.name,
            "JOBS": str(self.cfg.jobs), "SOURCE_DATE_EPOCH": str(self.cfg.source_date_epoch),
            "PATH": ":".join(path), "HOME": HOME, "LC_ALL": "C", "TZ": "UTC",
            "SHELL": "/bin/bash", "TERM": "dumb",
        }
        for d in used:
            env[prefix_variable(d.name)] = d.prefix
        env.update(flags.compiler_env(self.cfg, self.dist))
        return env

    def script(self, alternatives):
        """The build as one bash script: the obtained sources' fixups, the Debian patches,
        the recipe's patches, then the build system. alternatives: source id -> the
        Alternative the build unpacks (tasks/build/key.py obtained()): only its fixup is in
        the script, so a byte-identical alternative elsewhere changes neither the script nor
        the key. A recipe without debian_patches renders what it did before they existed."""
        r = self.recipe
        lines = ["set -euo pipefail", 'cd "$SRCDIR"']
        for key, value in r["environment"].items():
            assert env_key_check(key) is None, key     # validated when the recipe loaded
            lines.append(f"export {key}={dquote(value)}")
        for src in r.sources:
            fixup = alternatives[src.id].fixup
            if fixup:
                # names are validated when loaded; quoted anyway (defence in depth)
                where = '"$SRCDIR"/' + shlex.quote(src.dest) if src.dest else '"$SRCDIR"'
                lines.append(f"(cd {where}\n{fixup.rstrip()}\n)")
        for patch, rel in self.debian_patch_files():
            cves = f" ({', '.join(patch.cves)})" if patch.cves else ""
            failed = f"!!! debian patch {patch.name} of {r.debian_source} does not apply"
            lines.append("echo " + shlex.quote(f">>> debian patch {patch.name}{cves}"))
            lines.append("patch -p1 --forward --batch -i " + shlex.quote(f"{PATCHES}/{rel}")
                         + " || { echo " + shlex.quote(failed) + " >&2; exit 1; }")
        for i, patch in enumerate(r.patches):
            lines.append("echo " + shlex.quote(f">>> patch {patch.name}"))
            lines.append("patch -p1 --forward --batch -i "
                         + shlex.quote(f"{PATCHES}/{i:03d}-{patch.name}"))
        system = r["build"]
        if r["pre_configure"]:
            lines += ['cd "$SRCDIR"', r["pre_configure"].rstrip()]
        if system == "autotools":
            where = '"$BUILDDIR"' if r["out_of_tree"] else '"$SRCDIR"'
            lines += [f"cd {where}", "echo '>>> configure'",
                      '"$SRCDIR/configure" --prefix="$PREFIX" ' + words(r["configure"])]
        if system in ("autotools", "make"):
            if system == "make":
                lines.append('cd "$SRCDIR"')
            lines += ["echo '>>> make'", 'make -j"$JOBS" ' + words(r["make"]),
                      "echo '>>> install'", "make " + words(r["install"]) + " install"]
        if system == "script":
            lines += ['cd "$SRCDIR"', r["script"].rstrip()]
        if r["post_install"]:
            lines += ['cd "$BUILDDIR"', "echo '>>> post_install'", r["post_install"].rstrip()]
        return "\n".join(lines) + "\n"
