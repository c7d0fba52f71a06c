"""Stage: buildroot. The pinned Debian tree every build runs in (tasks/build/buildroot.py):
pulled from the build cache when it holds one for this spec, else made with mmdebstrap
(and pushed). Up to date while identity.json of the configured spec exists: a Debian
point release changes nothing until `doit clean buildroot`."""
from tasks.build import buildroot
from tasks.core.errors import UserError
from tasks.core.log import echo
from tasks.model.project import project
from tasks.model.stamp import REASONS


def make(cfg):
    from doit.exceptions import TaskFailed
    from tasks.ship import buildcache
    try:
        if not buildcache.pull_buildroot(cfg):
            buildroot.create(cfg, cfg.cache / "logs" / "buildroot.log")
            buildcache.push_buildroot(cfg)
    except UserError as exc:
        return TaskFailed(exc.render())
    doc = buildroot.identity(cfg)
    echo(f"buildroot: {doc['spec']['suite']}, {len(doc['packages'])} packages, identity "
         f"{doc['digest'][:12]}… at {buildroot.tree(cfg)}")
    return True


def current(task, values):
    if buildroot.identity(project) is not None:
        return True
    REASONS["buildroot"] = "no build root for this buildroot: spec yet"
    return False


def tasks():
    return {
        "actions": [(make, [project])],
        "uptodate": [current],
        "clean": [(buildroot.remove, [project])],
        "verbosity": 2,
    }
