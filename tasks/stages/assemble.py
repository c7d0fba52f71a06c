"""Stage: assemble. One task per distribution and platform (assemble:<dist>,
assemble:<dist>@arm64 for a foreign one) that lays its components' outputs over each
other into cache/stage/<dist>.manifest.json (<dist>@arm64.manifest.json)."""
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


def views(cfg, dist):
    """The configuration view of each platform the distribution is built for."""
    return [cfg.for_platform(p) for p in dist.platforms]


def defaults(cfg, dist):
    return [f"assemble:{view.label(dist.name)}" for view in views(cfg, dist)]


def tasks():
    for dist in project.distributions.values():
        for view in views(project, dist):
            label, tag = view.label(dist.name), view.tag(dist.name)
            yield {
                "name": label,
                "doc": f"{dist.name} {dist.version} at {dist.prefix}"
                       + (f" for {view.platform}" if tag else ""),
                "actions": [(assemble_verified, [view, dist.name])],
                "uptodate": [uptodate_check(f"assemble:{label}",
                                            lambda v=view, d=dist.name: assemble_stamp(v, d))],
                "task_dep": [f"build:{dist.name}/{c}{tag}" for c in dist.components],
                "verbosity": 2,
            }
