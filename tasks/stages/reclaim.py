"""Stage: reclaim (`doit reclaim`, on demand). Takes back space: the leftovers of killed
runs (which every run also sweeps), the work folders of failed or interrupted builds and
of upstream tests (kept for inspection until now), the scratch of earlier versions, and
the exported images of a configured image at another version than the current one.
A folder another run is using (its lock is held) is left alone. Prints what it removed
and how much."""
from tasks.build import leftovers
from tasks.core.files import human
from tasks.core.log import echo, say
from tasks.model.project import project


def reclaim(cfg):
    items = leftovers.find(cfg, failed=True) + leftovers.superseded_images(cfg)
    removed = leftovers.remove(items, say=lambda m: say(f"reclaim: {m}"))
    for path, why, size in removed:
        echo(f"reclaim: removed {path.relative_to(cfg.cache)} ({why}, {human(size)})")
    total = sum(size for _p, _w, size in removed)
    echo(f"reclaim: {len(removed)} removed, {human(total)} reclaimed in {cfg.cache}")
    return True


def tasks():
    yield {
        "basename": "reclaim",
        "actions": [(reclaim, [project])],
        "uptodate": [False],
        "verbosity": 2,
    }
