"""Stage: assemble. One task per distribution (assemble:<dist>) that lays its
components' outputs over each other into cache/stage/<dist>.manifest.json."""
from tasks.build.assemble import assemble, assemble_stamp
from tasks.model.project import project
from tasks.model.stamp import uptodate_check


def defaults(cfg, dist):
    return [f"assemble:{dist.name}"]


def tasks():
    for dist in project.distributions.values():
        yield {
            "name": dist.name,
            "doc": f"{dist.name} {dist.version} at {dist.prefix}",
            "actions": [(assemble, [project, dist.name])],
            "uptodate": [uptodate_check(f"assemble:{dist.name}",
                                        lambda d=dist.name: assemble_stamp(project, d))],
            "task_dep": [f"build:{dist.name}/{c}" for c in dist.components],
            "verbosity": 2,
        }
