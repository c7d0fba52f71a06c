"""The pipeline's stages, declared once.

dodo.py (through tasks/stages), the default task list, the nightly runner and the
report all read this list: a new stage is one module under tasks/stages/ plus one
entry here. Order is pipeline order (`doit list` shows it).
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str            # doit's basename: `doit <name>:<task>`
    module: str          # tasks/stages/<module>.py: tasks() and, if default, defaults(cfg, dist)
    doc: str             # one line for `doit list`
    default: bool        # part of a plain `doit` (the module's defaults(cfg) says which tasks)
    builds: bool         # a task of it that ran means something was (re)made (nightly report)
    colour: str          # its bars in the report's timeline
    why: str = ""        # why a task ran when its up-to-date check left no reason
    locked: bool = False  # two runs never run one of its tasks at once (stages.guarded)


STAGES = (
    Stage("check-host", "host", "Verify the host tools left outside the build root: bubblewrap, util-linux, mmdebstrap, apt.",
          default=True, builds=False, colour="#8d99ae", why="host tools are missing"),
    Stage("buildroot", "buildroot", "Make (or pull) the pinned Debian tree every build runs in (buildroot: in config.yaml).",
          default=False, builds=True, colour="#2a9d8f", why="no build root for this spec yet",
          locked=True),
    Stage("fetch", "fetch", "Download and sha256-verify every source of every recipe (cache/downloads).",
          default=False, builds=True, colour="#4c78a8", why="not in the download cache"),
    Stage("build", "build", "Compile each component in its sandbox; output in cache/stage/<dist>/<component>.",
          default=False, builds=True, colour="#54a24b"),
    Stage("assemble", "assemble", "Lay a distribution's component outputs over each other into its manifest.",
          default=True, builds=True, colour="#b279a2", locked=True),
    Stage("check", "check", "ELF audit and smoke tests of each distribution in an empty root (cache/checks).",
          default=True, builds=False, colour="#e45756", locked=True),
    Stage("test", "test", "Upstream test suites (recipe `test`), on demand: cache/tests/<dist>/<component>.json.",
          default=False, builds=False, colour="#eeca3b"),
    Stage("verify", "verify", "Hash each component's output against its manifest; names the command that repairs it.",
          default=False, builds=False, colour="#6f4e7c"),
    Stage("image", "image", "Export each distribution image to cache/images/<name>-<version>.tar (docker + OCI).",
          default=True, builds=True, colour="#f58518", locked=True),
    Stage("legal", "legal", "CycloneDX SBOM and license texts of each image, next to its tarball (legal-info).",
          default=True, builds=True, colour="#9d755d", locked=True),
    Stage("load", "load", "Load each exported image into the Docker-API engine (if any), tag <repository>:<version>.",
          default=True, builds=False, colour="#72b7b2",
          why="the engine lacks this image, or no engine answers", locked=True),
    Stage("push", "push", "Push each exported image to image_registry as <repository>/<name>:<version>.",
          default=True, builds=False, colour="#4c6ef5", locked=True),
    Stage("cache-push", "cache_push", "Upload each distribution's already-built component outputs the build cache lacks.",
          default=False, builds=False, colour="#a0a0a0", locked=True),
    Stage("check-images", "check_images", "Smoke tests in containers of other images (checks.images), tools mounted --volumes-from.",
          default=True, builds=False, colour="#ff9da6", locked=True),
    Stage("repro", "repro", "Build a distribution again (other cache, clock, umask, jobs, env order) and compare file by file.",
          default=False, builds=False, colour="#17becf", locked=True),
    Stage("outdated", "outdated", "Recipes against Debian's suites (debian.suites) and upstream: newer versions, CVEs fixed since.",
          default=False, builds=False, colour="#c9a227", why="asks Debian and upstream each time"),
    Stage("reclaim", "reclaim", "Remove leftovers of killed runs, failed builds' work folders and superseded images.",
          default=False, builds=False, colour="#bab0ac"),
)

BY_NAME = {stage.name: stage for stage in STAGES}


def stage_of(task_name):
    """The stage of a doit task name ('build:base/sed' -> Stage build), or None."""
    return BY_NAME.get(task_name.split(":", 1)[0])
