"""Stage: cache-push. Seed the build cache with a distribution's component outputs that
were built before buildcache.url was configured (or while it was down), and with the
build root they were built in."""
from tasks.core.log import echo
from tasks.model.project import project


def cache_push_action(cfg, dist_name):
    from doit.exceptions import TaskFailed

    from tasks.ship.buildcache import push_buildroot, push_built
    from tasks.core.errors import UserError
    try:
        done = push_built(cfg, dist_name)
    except UserError as exc:
        return TaskFailed(exc.render())
    # the build root its outputs were made in: a second machine needs it for the same keys
    root = "the build root pushed" if push_buildroot(cfg) else "the build root already there"
    echo(f"cache-push:{dist_name}: {len(done['pushed'])} pushed, {len(done['present'])} "
         f"already in the registry, {root}"
         + (f", not built (skipped): {', '.join(done['not built'])}" if done["not built"] else ""))
    return True


def tasks():
    for dist in project.distributions.values():
        yield {
            "name": dist.name,
            "doc": f"push {dist.name}'s built components to buildcache.url (after assemble)",
            "actions": [(cache_push_action, [project, dist.name])],
            "task_dep": [f"assemble:{dist.name}"],
            "uptodate": [False],
            "verbosity": 2,
        }
