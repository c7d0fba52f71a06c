"""Stage: push. One push:<image> task per image: uploads the OCI layout inside
cache/images/<name>-<version>.tar (tasks/ship/image.py) to the registry of config.yaml's
image_registry as <registry>/<repository>/<name>:<version>, byte for byte (same manifest
digest as the exported image), then reads the manifest back to check it.

An image of several platforms (stages/image.py) is pushed as its OCI image index:
each platform's blobs and manifest (by digest), then the index under the tag
(imageindex.push_index), so `docker pull` and `podman pull` take their platform's.

No container engine is involved (load:<name> with engine.push pushes through one).
Not part of a plain `doit` unless image_registry.default is true.
"""
import re
import tarfile

from tasks.core.errors import UserError
from tasks.core.log import echo
from tasks.ship import credentials, registry
from tasks.ship.image import image_paths, read_result
from tasks.ship.imageindex import index_paths, push_index
from tasks.ship.ocilayout import read_layout, upload_image
from tasks.model.project import project
from tasks.stages.image import exports, multi_platform


def settings(cfg):
    s = dict(cfg.data["image_registry"])
    cache = cfg.data["buildcache"]
    if not s["url"]:
        s["url"] = cache["url"]
    return s


def target(cfg, dist, name):
    """(registry url, repository, tag) of an image."""
    s = settings(cfg)
    tag = re.sub(r"[^A-Za-z0-9_.-]", "_", dist.version)[:128]
    return s["url"].rstrip("/"), registry.repository_name(s["repository"], name), tag


def _client(cfg):
    s = settings(cfg)
    user, password, _where = credentials.resolve_credentials(
        s["url"], s["username_env"], s["password_env"], s["docker_config"])
    return registry.Registry(s["url"], user, password, s["connect_timeout"], s["read_timeout"])


def push_is_current(cfg, dist_name, name):
    def check(task, values):
        from tasks.model.stamp import REASONS
        dist = cfg.distributions[dist_name]
        wanted, accept = _pushed_digest(cfg, dist, name)
        url, repo, tag = target(cfg, dist, name)
        if wanted is None or not url:
            return False
        try:
            current = _client(cfg).manifest_digest(repo, tag, accept=accept)
        except registry.RegistryError:
            return False
        if current != wanted:
            REASONS[f"push:{name}"] = f"{url}/{repo}:{tag} is {current or 'not there'}"
            return False
        return True
    check.__name__ = f"registry_has_{name}"
    return check


def _pushed_digest(cfg, dist, name):
    """(the digest the tag should name, the media types to ask for): the export's
    manifest, or the index of an image of several platforms; (None, _) before image:."""
    if multi_platform(dist):
        try:
            text = index_paths(cfg.cache, name, dist.version)["digest"].read_text().strip()
        except OSError:
            text = None
        return text or None, (registry.MEDIA_INDEX,)
    result = read_result(image_paths(cfg.cache, name, dist.version)["json"])
    return (result or {}).get("digest"), (registry.MEDIA_MANIFEST,)


def push_index_action(cfg, dist, name):
    """push:<name> of an image of several platforms: every export, then the index."""
    from doit.exceptions import TaskFailed
    url, repo, tag = target(cfg, dist, name)
    tars = [paths["tar"] for _p, _v, paths in exports(cfg, dist, name)]
    index = index_paths(cfg.cache, name, dist.version)["index"]
    for path in tars + [index]:
        if not path.is_file():
            return TaskFailed(f"error: {path} is missing: run the image:{name} task.")
    where = f"{url}/{repo}:{tag}"
    try:
        digest, sent = push_index(_client(cfg), repo, tag, index, tars)
    except UserError as exc:
        return TaskFailed(f"error: push:{name}: {exc.render()}")
    except (registry.RegistryError, OSError, KeyError, ValueError, tarfile.TarError) as exc:
        return TaskFailed(f"error: push:{name}: pushing {index} to {where} failed: {exc}. "
                          "Check image_registry in config.yaml and the credentials "
                          "(image_registry.username_env/password_env or the Docker config).")
    echo(f"push:{name}: {where}@{digest} (index of {', '.join(dist.platforms)}; "
         f"{sent / 1e6:.1f} MB uploaded)")
    return True


def push_action(cfg, dist_name, name):
    from doit.exceptions import TaskFailed
    dist = cfg.distributions[dist_name]
    paths = image_paths(cfg.cache, name, dist.version)
    result = read_result(paths["json"])
    url, repo, tag = target(cfg, dist, name)
    if not url:
        return TaskFailed(f"error: {cfg.path}: field 'image_registry.url': push:{name} needs "
                          "a registry: set image_registry.url (or buildcache.url).")
    if multi_platform(dist):
        return push_index_action(cfg, dist, name)
    if result is None or not paths["tar"].is_file():
        return TaskFailed(f"error: {paths['tar']} is missing: run the image:{name} task.")
    where = f"{url}/{repo}:{tag}"
    try:
        layout = read_layout(paths["tar"])
        client = _client(cfg)
        sent = upload_image(client, repo, layout, tag)
        back = client.get_manifest(repo, tag)
    except UserError as exc:
        return TaskFailed(f"error: push:{name}: {exc.render()}")
    except (registry.RegistryError, OSError, KeyError, ValueError, tarfile.TarError) as exc:
        return TaskFailed(f"error: push:{name}: pushing {paths['tar']} to {where} failed: {exc}. "
                          "Check image_registry in config.yaml and the credentials "
                          "(image_registry.username_env/password_env or the Docker config).")
    digest = layout.digest
    if back is None or back[1] != digest:
        return TaskFailed(f"error: push:{name}: {where} reads back as "
                          f"{back[1] if back else 'nothing'}, not {digest}.")
    echo(f"push:{name}: {where}@{digest} ({sent / 1e6:.1f} MB uploaded)")
    return True


def defaults(cfg, dist):
    return [f"push:{name}" for name in dist.images] if cfg.data["image_registry"]["default"] else []


def tasks():
    for dist in project.distributions.values():
        for name in dist.images:
            url, repo, tag = target(project, dist, name)
            yield {
                "name": name,
                "doc": f"upload to {url or '(image_registry.url unset)'}/{repo}:{tag}"
                       + (f" (index of {', '.join(dist.platforms)})"
                          if multi_platform(dist) else ""),
                "actions": [(push_action, [project, dist.name, name])],
                "uptodate": [push_is_current(project, dist.name, name)],
                "task_dep": [f"image:{name}"],
                "verbosity": 2,
            }
