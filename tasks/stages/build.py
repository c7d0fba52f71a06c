"""Stage: build. One task per component (build:<dist>/<component>): its output in
cache/stage/<dist>/<component>, pulled from the build cache when it has the key,
else built in the component's sandbox (and then pushed to the cache)."""
from tasks.build import builder, leftovers, stagedir
from tasks.build.key import component_key
from tasks.core.log import say
from tasks.model.component import Component
from tasks.model.project import project
from tasks.model.stamp import REASONS, uptodate_check
from tasks.ship import buildcache


def components():
    for dist in project.distributions.values():
        for name in dist.components:
            yield Component(project, dist.name, name)


def make(comp):
    """The build:<dist>/<component> action: the cache first, the builder second."""
    with stagedir.locked(comp) as waited:
        stamp = component_key(comp)
        # another run may have built it while we waited, or just before we took the lock
        # (this run's check found it stale: REASONS; `doit -a` skips that check)
        if (waited or comp.task in REASONS) and stamp.is_current():
            say(f"{comp.task}: built by the other run")
            return True
        reason = REASONS.pop(comp.task, None) or stamp.why()
        if buildcache.pull(comp, stamp):
            return True
        result = builder.build(comp, reason)
        if result is True:
            buildcache.push(comp, component_key(comp))
        return result


def current(comp):
    """The up-to-date check: the component's key. The first check of a run also sweeps
    the leftovers of killed runs (build/leftovers.py): it runs before any build starts."""
    check = uptodate_check(comp.task, lambda: component_key(comp))

    def current_key(task, values):
        leftovers.sweep(project, say)
        return check(task, values)
    current_key.__name__ = check.__name__
    return current_key


def tasks():
    for comp in components():
        r = comp.recipe
        deps = [f"build:{comp.dist.name}/{d}" for d in r.depends if d in comp.dist.components]
        deps += [f"assemble:{u}" for u in comp.dist.uses]
        deps += [f"fetch:{s.id}" for s in r.sources]
        yield {
            "name": f"{comp.dist.name}/{comp.name}",
            "doc": f"{r.name} {r.version}: {r.description}",
            "actions": [(make, [comp])],
            "uptodate": [current(comp)],
            "task_dep": ["check-host"] + deps,
            "clean": [(stagedir.remove, [comp])],
        }
