"""Stage: fetch. One task per source file, like Buildroot's `make source`."""
from tasks.core.log import echo
from tasks.model.project import project


def _fetch(source):
    from tasks.sources.download import fetch_source
    from tasks.core.errors import UserError
    from doit.exceptions import TaskFailed
    try:
        result = fetch_source(source, project)
    except UserError as exc:
        return TaskFailed(exc.render())
    echo(f"fetch:{source.id}: {result.alternative.file} verified (from {result.how})")
    return True


def _is_cached(source):
    def check(task, values):
        from tasks.sources.download import cached
        return cached(source, project) is not None
    return check


def tasks():
    for source_id, source in sorted(project.sources.items()):
        yield {
            "name": source_id,
            "doc": f"download {source_id}",
            "actions": [(_fetch, [source])],
            "uptodate": [_is_cached(source)],
            "verbosity": 2,
        }
