"""Stage: assemble. One task per distribution (assemble:<dist>) that lays its
components' outputs over each other into cache/stage/<dist>.manifest.json."""
from tasks.build import verify
from tasks.build.assemble import assemble, assemble_stamp
from tasks.model.project import project
from tasks.model.stamp import uptodate_check


def assemble_verified(cfg, dist_name):
    """assemble:<dist>: first the quick check of every component's tree against its
    manifest (build/verify.py), so an edited output is named, not laid into the tree."""
    from doit.exceptions import TaskFailed
    message = verify.failure(verify.distribution(cfg, dist_name))
    if message:
        return TaskFailed(message)
    return assemble(cfg, dist_name)


def defaults(cfg, dist):
    return [f"assemble:{dist.name}"]


def tasks():
    for dist in project.distributions.values():
        yield {
            "name": dist.name,
            "doc": f"{dist.name} {dist.version} at {dist.prefix}",
            "actions": [(assemble_verified, [project, dist.name])],
            "uptodate": [uptodate_check(f"assemble:{dist.name}",
                                        lambda d=dist.name: assemble_stamp(project, d))],
            "task_dep": [f"build:{dist.name}/{c}" for c in dist.components],
            "verbosity": 2,
        }
