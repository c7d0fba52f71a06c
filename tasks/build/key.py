"""A component's key: exactly the inputs of its build, digested (see tasks/model/stamp.py).

Equal keys promise equal outputs, on any machine. The key holds what shapes the
output and nothing else:
  - the sources obtained, by sha256 (not file name or URL: a mirror or a byte-identical
    alternative changes nothing), with dest, inner and extract; a source that is not
    unpacked is copied under its file name, so that name counts too;
  - the patches, by their path in the recipes folder and their content; the Debian patches
    (recipe `debian_patches`) by their tarball, a source (sha256), and by the script,
    which names them in order with their CVEs;
  - the script rendered from the recipe (fixups, configure, make, install, ...), the
    build environment and whether the build has network;
  - the build root (tasks/build/buildroot.py): its package=version list and config;
  - the content digests of the outputs it builds on: its dependencies in its own
    distribution, and the components of other distributions it mounts (the whole
    toolchain; of a distribution used only at run time, just what it depends on);
  - which files may keep a setuid bit, and the digest of the engine code (ENGINE_MODULES).
Metadata (description, homepage, license, URLs) lives in manifest.json beside the
output, not in the key and not in the content digest that dependents consume.
"""
import hashlib

from tasks.build import buildroot
from tasks.core import canonical, code
from tasks.model.stamp import Stamp
from tasks.sources.download import cached

# The modules whose code decides what a build produces: the script and environment,
# the compiler flags, unpacking, the sandbox, the build root, the capture. Editing any
# of them makes every component stale once; editing a stage's messages does not.
ENGINE_MODULES = ("tasks.model.component", "tasks.model.flags", "tasks.core.shell",
                  "tasks.sources.unpack", "tasks.build.sandbox", "tasks.build.builder",
                  "tasks.build.manifest", "tasks.build.key", "tasks.build.buildroot")


def engine_digest():
    return code.digest(*ENGINE_MODULES)


def obtained(comp, fetched=None):
    """source id -> the Alternative the build uses: `fetched` (what the build unpacked),
    else what the download cache holds, else the recipe's first alternative."""
    out = {}
    for src in comp.recipe.sources:
        alt = (fetched or {}).get(src.id)
        if alt is None and fetched is None:
            hit = cached(src, comp.cfg)
            alt = hit.alternative if hit else None
        out[src.id] = alt or src.primary
    return out


def input_digests(comp):
    """What the build mounts, by content digest: {"depends": {component: digest},
    "inputs": {distribution: {component: digest}}}. Also what the build stage compares
    before publishing (a dependency replaced during the build)."""
    cfg = comp.cfg
    return {
        "depends": {d: content_of(cfg.stage_of(comp.dist.name, d) / "key.json")
                    for d in comp.local_deps},
        "inputs": {dist: {c: content_of(cfg.stage_of(dist, c) / "key.json") for c in comps}
                   for dist, comps in comp.foreign_inputs.items()},
    }


def component_key(comp, fetched=None):
    """The component's Stamp; `fetched` maps source id -> Alternative obtained."""
    alts = obtained(comp, fetched)
    sources = []
    for src in comp.recipe.sources:
        alt = alts[src.id]
        entry = {"sha256": alt.sha256, "dest": src.dest, "inner": alt.inner,
                 "extract": src.extract}
        if not src.extract:
            entry["file"] = alt.file
        sources.append(entry)
    env = comp.environment()
    env.pop("JOBS")   # parallelism does not change what is built
    recipes_dir = comp.cfg.recipes_dir
    inputs = {
        "sources": sources,
        "patches": [[str(p.relative_to(recipes_dir)), hashlib.sha256(p.read_bytes()).hexdigest()]
                    for p in comp.recipe.patches],
        "script": comp.script(alts),
        "environment": env,
        "network": comp.recipe["network"],
        "buildroot": buildroot.identity_digest(comp.cfg),
        **input_digests(comp),
        # which files keep setuid/setgid bits when captured
        "setuid": sorted(comp.dist.setuid),
        "engine": engine_digest(),
    }
    return Stamp(comp.stamp_path, inputs)


def content_of(stamp_file):
    """The content digest of a finished output (key.json's "content"), None if none."""
    try:
        return canonical.load(stamp_file).get("content")
    except (OSError, ValueError):
        return None
