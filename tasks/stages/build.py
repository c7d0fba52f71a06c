"""Stage: build. One task per component and platform (build:<dist>/<component>, and
build:<dist>/<component>@arm64 for a foreign platform): its output in
cache/stage/<dist>/<component> (cache/stage/<dist>@arm64/<component>), pulled from the
build cache when it has the key, else built in the component's sandbox (and then pushed
to the cache)."""
from doit.exceptions import TaskFailed

from tasks.build import builder, leftovers, stagedir
from tasks.build.key import component_key
from tasks.core.log import say
from tasks.model import cross
from tasks.model.cross import component
from tasks.model.project import project
from tasks.model.stamp import REASONS, uptodate_check
from tasks.ship import buildcache


def components(native_only=False):
    """Every component of every distribution, for each of its platforms (native_only:
    the build machine's platform, for the stages not yet taught foreign ones)."""
    for dist in project.distributions.values():
        for platform in dist.platforms:
            if native_only and platform != project.native_platform:
                continue
            cfg = project.for_platform(platform)
            for name in dist.components:
                yield component(cfg, dist.name, name)


def make(comp):
    """The build:<dist>/<component> action: the cache first, the builder second. The
    outputs the build mounts are held shared (stagedir.using) from the first key to the
    push: a run replacing one of them waits until this build is published and pushed."""
    refusal = cross.preflight(comp)
    if refusal:
        say(refusal)
        return TaskFailed(refusal)
    with stagedir.locked(comp) as waited, \
            stagedir.using(comp.cfg, builder.inputs(comp), comp.task):
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
        if result is not True:
            return result
        return _push(comp)


def _push(comp):
    """Push the output just built, only while its inputs are still what its key says (an
    input replaced without the lock after the publish: nothing is pushed)."""
    stamp = component_key(comp)
    stored = stamp.stored()
    if stored is None:
        return TaskFailed(f"{comp.task}: its key.json is gone right after its build; "
                          "nothing is pushed")
    changed = builder.changed_input(comp, stored.get("inputs", {}))
    if changed:
        message = (f"{comp.task}: its input {changed} changed after its output was "
                   "published; nothing is pushed and the next run builds it again.")
        say(message)
        return TaskFailed(message)
    buildcache.push(comp, stamp)
    return True


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
        r, cfg = comp.recipe, comp.cfg
        tag = cfg.tag(comp.dist.name)
        deps = [f"build:{comp.dist.name}/{d}{tag}" for d in r.depends if d in comp.dist.components]
        deps += [f"build:{d}/{c}{cfg.tag(d)}" for d, comps in comp.foreign_inputs.items()
                 for c in comps]
        deps += [f"fetch:{s.id}" for s in r.sources]
        yield {
            "name": f"{comp.dist.name}/{comp.name}{tag}",
            "doc": f"{r.name} {r.version}: {r.description}",
            "actions": [(make, [comp])],
            "uptodate": [current(comp)],
            "task_dep": ["check-host", "buildroot"] + deps,
            "clean": [(stagedir.remove, [comp])],
        }
