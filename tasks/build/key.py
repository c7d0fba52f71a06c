"""A component's key: the inputs of its build, digested (see tasks/model/stamp.py).

Equal keys promise equal outputs. The key holds the recipe, the script rendered
from it, the build environment, the sources obtained (by sha256), the patches, the
dependencies' manifest digests, the used distributions' assembled digests, and the
digest of the engine code that shapes the output (ENGINE_MODULES).
"""
import hashlib

from tasks.core import canonical, code
from tasks.model.stamp import Stamp
from tasks.sources.download import cached

# The modules whose code decides what a build produces: the script and environment,
# the compiler flags, unpacking, the sandbox, the capture. Editing any of them makes
# every component stale once; editing a stage's messages does not.
ENGINE_MODULES = ("tasks.model.component", "tasks.model.flags", "tasks.core.shell",
                  "tasks.sources.unpack", "tasks.build.sandbox", "tasks.build.builder",
                  "tasks.build.manifest", "tasks.build.key")


# recipe fields that do not shape the output: checks and limits
NOT_BUILD_INPUTS = ("smoke", "test", "timeout", "test_timeout", "smoke_timeout")


def engine_digest():
    return code.digest(*ENGINE_MODULES)


def component_key(comp, fetched=None):
    """The component's Stamp; `fetched` maps source id -> Alternative obtained (default:
    whatever the download cache holds, else the primary alternative)."""
    sources = []
    for src in comp.recipe.sources:
        alt = None
        if fetched is not None:
            alt = fetched.get(src.id)
        else:
            hit = cached(src, comp.cfg)
            alt = hit.alternative if hit else None
        alt = alt or src.primary
        sources.append({"file": alt.file, "sha256": alt.sha256, "dest": src.dest})
    env = comp.environment()
    env.pop("JOBS")   # parallelism does not change what is built
    cfg = comp.cfg
    deps = {d: _manifest_digest(cfg.stage_of(comp.dist.name, d) / "key.json")
            for d in comp.local_deps}
    uses = {d: _manifest_digest(cfg.assembled_stamp(d)) for d in comp.used_dists}
    inputs = {
        "recipe": {k: v for k, v in comp.recipe.data.items() if k not in NOT_BUILD_INPUTS},
        "script": comp.script(),
        "environment": env,
        "sources": sources,
        "patches": {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in comp.recipe.patches},
        "depends": deps,
        "uses": uses,
        # which files keep setuid/setgid bits when captured
        "setuid": sorted(comp.dist.setuid),
        "engine": engine_digest(),
    }
    return Stamp(comp.stamp_path, inputs)


def _manifest_digest(stamp_file):
    try:
        return canonical.load(stamp_file).get("manifest")
    except (OSError, ValueError):
        return None
