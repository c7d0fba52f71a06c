"""The shared build cache: component outputs as OCI artifacts in a registry, by key.

Before a component builds, the engine asks the registry for the tag <key> (the
component key, stamp.py) in repository <buildcache.repository>/<dist>-<component>. On a
hit it pulls the artifact, checks it (manifest digest, config and layer sha256 and size,
the unpacked tree against manifest.json) and publishes it into cache/stage exactly like
a local build would: stage folder by renames, key.json written last. After a local
build it pushes (read-write mode). docs/buildcache.md has the format and the policy;
the layer itself (write, unpack, verify) is tasks/ship/layer.py.

Failure policy: a registry that is down, slow, answers 5xx or refuses our credentials
gives ONE warning and is not asked again during this run; the component builds
locally. An artifact that fails a check is rejected with a warning naming it; that
component builds locally (and, read-write, pushes its own output over the bad tag).
Nothing here ever fails a build.
"""
import hashlib
import json
import os
import threading
import time

from tasks.core import canonical, files
from tasks.core.log import say
from tasks.ship import credentials, registry
from tasks.ship.layer import unpack_layer, verify_output, write_layer
from tasks.core.errors import UserError
from tasks.build import buildroot, manifest, sandbox, stagedir, verify
from tasks.build.key import component_key, engine_digest

MEDIA_CONFIG = "application/vnd.dappdeps.component.config.v1+json"
MEDIA_LAYER = "application/vnd.dappdeps.component.v1.tar+gzip"
FORMAT = 1
ANNOTATION = "io.dappdeps"
MODES = ("read-write", "read-only", "off")


def mode_of(cfg):
    """The effective mode: DAPPDEPS_BUILDCACHE wins over buildcache.mode; no url = off."""
    settings = cfg.data.get("buildcache") or {}
    if not settings.get("url"):
        return "off"
    env = os.environ.get("DAPPDEPS_BUILDCACHE", "").strip().lower()
    return env if env in MODES else settings.get("mode", "read-write")


class BuildCache:
    """The cache of one doit run (one per configuration, shared by build threads)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.settings = cfg.data.get("buildcache") or {}
        self.mode = mode_of(cfg)
        self.url = (self.settings.get("url") or "").rstrip("/")
        self.disabled = None          # why the registry is not used any more in this run
        self.push_refused = None      # why pushing stopped (the registry itself answers)
        self._client = None
        self._lock = threading.Lock()

    # ---- policy ------------------------------------------------------------------
    @property
    def active(self):
        return self.mode != "off" and self.disabled is None

    def client(self):
        with self._lock:
            if self._client is None:
                s = self.settings
                user, password, _where = credentials.resolve_credentials(
                    self.url, s["username_env"], s["password_env"], s["docker_config"])
                self._client = registry.Registry(self.url, user, password,
                                                 s["connect_timeout"], s["read_timeout"])
            return self._client

    def disable(self, task, exc):
        with self._lock:
            if self.disabled is not None:
                return
            self.disabled = str(exc)
        if isinstance(exc, registry.AuthFailed):
            what = ("check the credentials: the variables named by buildcache.username_env/"
                    "password_env, or `docker login` for the Docker config file")
        else:
            what = ("check buildcache.url in config.yaml and that the registry runs, or set "
                    "DAPPDEPS_BUILDCACHE=off")
        say(f"warning: {task}: build cache {self.url} not usable ({exc}); it is skipped for "
            f"the rest of this run and components build locally; {what}.")

    def refuse_push(self, task, exc):
        with self._lock:
            if self.push_refused is not None:
                return
            self.push_refused = str(exc)
        say(f"warning: {task}: the build cache {self.url} refused a push ({exc}); outputs are "
            "not pushed for the rest of this run (pulls go on); check that the credentials "
            "may push, or set buildcache.mode: read-only.")

    def repository(self, comp):
        return registry.repository_name(self.settings["repository"],
                                        f"{comp.dist.name}-{comp.name}")

    def where(self, comp, key):
        return f"{self.url}/{self.repository(comp)}:{key}"

    # ---- pull --------------------------------------------------------------------
    def pull(self, comp, stamp):
        """Publish the registry's output for stamp.key into the stage. True on success."""
        if not self.active:
            return False
        started = time.time()
        repo = self.repository(comp)
        try:
            found = self.client().get_manifest(repo, stamp.key)
            if found is None:
                return False
            body, digest = found
            doc = _check_manifest(body, comp, stamp.key)
            config = _parse_config(self.client().blob_bytes(repo, doc["config"]))
            _check_config(config, comp, stamp.key)
            # the output and its key change together: no other run sees one without the other
            with stagedir.replacing(comp):
                size = _install(self.client(), repo, doc["layers"][0], comp, config)
                if sandbox.stopping():          # a signal: the key must not be written now
                    return False
                entries = canonical.load(comp.manifest_path)["entries"]   # checked by _install
                stamp.write(manifest=config["manifest"], content=manifest.content_digest(entries),
                            seconds=round(time.time() - started, 1),
                            pulled={"registry": self.url, "repository": repo, "digest": digest})
        except registry.Corrupt as exc:
            say(f"warning: {comp.task}: rejected {self.where(comp, stamp.key)} from the build "
                f"cache: {exc}; building locally.")
            return False
        except (registry.RegistryError, OSError) as exc:
            self.disable(comp.task, exc)
            return False
        comp.log_path.parent.mkdir(parents=True, exist_ok=True)
        comp.log_path.write_text(f"# {comp.task} {comp.recipe.version} pulled from "
                                 f"{self.url}/{repo}@{digest} "
                                 f"{time.strftime('%Y-%m-%d %H:%M:%S')}; not compiled here\n")
        say(f"{comp.task}: pulled from {self.url}/{repo} (key {stamp.key[:12]}…, "
            f"{_size(size)}) in {time.time() - started:.1f} s")
        return True

    # ---- push --------------------------------------------------------------------
    def push(self, comp, stamp):
        """Upload the stage output of a finished local build (read-write mode only)."""
        if not self.active or self.mode != "read-write" or self.push_refused:
            return False
        started = time.time()
        repo = self.repository(comp)
        layer = comp.stage_dir.with_name(f".{comp.name}.push-{files.unique_suffix()}.tar.gz")
        try:
            stored = json.loads(stamp.path.read_text())
            layer_digest, layer_size = write_layer(comp.stage_dir, layer,
                                                   self.cfg.source_date_epoch,
                                                   self.settings["gzip_level"])
            config = canonical.dumps({
                "format": FORMAT, "key": stamp.key, "component": comp.name,
                "distribution": comp.dist.name, "version": comp.recipe.version,
                "prefix": comp.dist.prefix, "manifest": stored["manifest"],
                "engine": engine_digest()}).encode()
            config_desc = {"mediaType": MEDIA_CONFIG, "size": len(config),
                           "digest": "sha256:" + hashlib.sha256(config).hexdigest()}
            layer_desc = {"mediaType": MEDIA_LAYER, "size": layer_size, "digest": layer_digest}
            client = self.client()
            client.upload_blob(repo, config_desc["digest"], len(config), lambda: config)
            client.upload_blob(repo, layer_digest, layer_size, lambda: open(layer, "rb"))
            body = canonical.dumps({
                "schemaVersion": 2, "mediaType": registry.MEDIA_MANIFEST,
                "config": config_desc, "layers": [layer_desc],
                "annotations": {f"{ANNOTATION}.key": stamp.key,
                                f"{ANNOTATION}.component": comp.name,
                                f"{ANNOTATION}.distribution": comp.dist.name,
                                f"{ANNOTATION}.version": comp.recipe.version,
                                "org.opencontainers.image.title": f"{comp.dist.name}/{comp.name}"},
            }).encode()
            digest = client.put_manifest(repo, stamp.key, body)
        except (registry.AuthFailed, registry.Rejected) as exc:
            # pulling may still work (read-only credentials, say): stop pushing only
            self.refuse_push(comp.task, exc)
            return False
        except (registry.RegistryError, OSError, ValueError, KeyError) as exc:
            self.disable(comp.task, exc)
            return False
        finally:
            layer.unlink(missing_ok=True)
        say(f"{comp.task}: pushed to {self.url}/{repo}@{digest} (key {stamp.key[:12]}…, "
            f"{_size(layer_size)}) in {time.time() - started:.1f} s")
        return True


def push_built(cfg, dist_name):
    """Upload the outputs already in cache/stage that the registry lacks: components built
    before the cache was configured, or by a run in read-only mode. Only outputs whose
    key.json matches the current key. Returns {"pushed", "present", "not built"} lists."""
    from tasks.model.cross import component
    cache = for_config(cfg)
    if not cache.url or cache.mode != "read-write":
        raise UserError(f"pushing needs buildcache.url and mode read-write (now: url "
                        f"'{cache.url}', mode {cache.mode}).", cfg.path, "buildcache")
    done = {"pushed": [], "present": [], "not built": []}
    for name in cfg.distributions[dist_name].components:
        comp = component(cfg, dist_name, name)     # a cross toolchain's has its target's env
        stamp = component_key(comp)
        if not stamp.is_current():
            done["not built"].append(name)
            continue
        found = verify.problems(comp)
        if found:                       # never seed the cache with an edited output
            raise UserError(verify.describe(comp, found))
        try:
            present = cache.client().manifest_digest(cache.repository(comp), stamp.key)
        except registry.RegistryError as exc:
            raise UserError(f"the build cache {cache.url} does not answer: {exc}", cfg.path,
                            "buildcache.url") from exc
        if present:
            done["present"].append(name)
        elif cache.push(comp, stamp):
            done["pushed"].append(name)
        else:
            raise UserError(f"pushing {comp.task} failed: "
                            f"{cache.push_refused or cache.disabled}", cfg.path, "buildcache")
    return done


def _size(size):
    return f"{size / 1e6:.1f} MB" if size >= 100e3 else f"{size / 1e3:.0f} kB"


_CACHES = {}
_CACHES_LOCK = threading.Lock()


def for_config(cfg):
    with _CACHES_LOCK:
        cache = _CACHES.get(id(cfg))
        if cache is None or cache.cfg is not cfg:
            cache = _CACHES[id(cfg)] = BuildCache(cfg)
        return cache


def _hook(action, comp, stamp):
    if mode_of(comp.cfg) == "off":
        return False
    cache = for_config(comp.cfg)
    try:
        return getattr(cache, action)(comp, stamp)
    except Exception as exc:            # noqa: BLE001 - the cache must never fail a build
        cache.disable(comp.task, f"unexpected {type(exc).__name__}: {exc}")
        return False


def pull(comp, stamp):
    """Before a build: True when the output came from the registry (the build stage asks)."""
    return _hook("pull", comp, stamp)


def push(comp, stamp):
    """After a successful local build and its key (the build stage asks)."""
    return _hook("push", comp, stamp)


# ---- the artifact -----------------------------------------------------------------
def _check_manifest(body, comp, key):
    try:
        doc = json.loads(body)
    except ValueError:
        raise registry.Corrupt("the manifest is not JSON") from None
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise registry.Corrupt("not an OCI manifest (schemaVersion 2)")
    config = doc.get("config") or {}
    layers = doc.get("layers") or []
    if config.get("mediaType") != MEDIA_CONFIG:
        raise registry.Corrupt(f"config media type {config.get('mediaType')!r} is not "
                               f"{MEDIA_CONFIG}")
    if len(layers) != 1 or layers[0].get("mediaType") != MEDIA_LAYER:
        raise registry.Corrupt(f"expected one layer of type {MEDIA_LAYER}")
    said = (doc.get("annotations") or {}).get(f"{ANNOTATION}.key")
    if said != key:
        raise registry.Corrupt(f"annotation {ANNOTATION}.key is {said!r}, not this key")
    return doc


def _parse_config(blob):
    try:
        config = json.loads(blob)
    except ValueError:
        raise registry.Corrupt("the config blob is not JSON") from None
    if not isinstance(config, dict):
        raise registry.Corrupt("the config blob is not a JSON object")
    return config


def _check_config(config, comp, key):
    expect = {"format": FORMAT, "key": key, "component": comp.name,
              "distribution": comp.dist.name, "prefix": comp.dist.prefix}
    for name, value in expect.items():
        if config.get(name) != value:
            raise registry.Corrupt(f"config {name} is {config.get(name)!r}, expected {value!r}")
    if not isinstance(config.get("manifest"), str) or len(config["manifest"]) != 64:
        raise registry.Corrupt("config has no manifest digest")


def _install(client, repo, layer_desc, comp, config):
    """Download, unpack and verify the layer, then move it into the stage (renames).
    Returns the layer's size. Raises Corrupt when anything does not match."""
    scratch = stagedir.scratch(comp, "pull")
    new = stagedir.scratch(comp, "new")
    scratch.mkdir()
    try:
        blob = client.blob_to_file(repo, layer_desc, scratch / "layer.tar.gz")
        try:
            unpack_layer(blob, new)
            verify_output(new, comp, config["manifest"])
        except registry.Corrupt:
            if new.exists():
                files.force_rmtree(new)
            raise
        stagedir.replace(comp, new)
    finally:
        files.force_rmtree(scratch)
    return layer_desc["size"]


# ---- the build root ---------------------------------------------------------------
# One artifact per build root spec, in repository <buildcache.repository>/buildroot,
# tagged with the spec digest; the same layer format as a component's output. The
# config names the identity (package=version list digest) the pulled tree must give.
MEDIA_BUILDROOT = "application/vnd.dappdeps.buildroot.config.v1+json"


def pull_buildroot(cfg):
    """Make the configured build root from the build cache; True when it did."""
    cache = for_config(cfg)
    if not cache.active:
        return False
    repo = registry.repository_name(cache.settings["repository"], "buildroot")
    tag = buildroot.spec_digest(cfg)
    started = time.time()
    target = buildroot.folder(cfg)
    work = target.with_name(f".{target.name}.pull-{files.unique_suffix()}")
    blob = target.with_name(f".{target.name}.layer-{files.unique_suffix()}.tar.gz")
    try:
        found = cache.client().get_manifest(repo, tag)
        if found is None:
            return False
        doc = json.loads(found[0])
        config = _parse_config(cache.client().blob_bytes(repo, doc["config"]))
        if (doc["config"].get("mediaType") != MEDIA_BUILDROOT or len(doc.get("layers", ())) != 1
                or config.get("spec") != buildroot.spec(cfg)):
            raise registry.Corrupt("not a build root artifact of this spec")
        target.parent.mkdir(parents=True, exist_ok=True)
        cache.client().blob_to_file(repo, doc["layers"][0], blob)
        unpack_layer(blob, work)
        buildroot.check_pulled(cfg, work, config.get("identity"))
        buildroot.publish(cfg, work)
    except (registry.Corrupt, UserError, ValueError, KeyError, TypeError, AttributeError) as exc:
        say(f"warning: buildroot: rejected {cache.url}/{repo}:{tag[:12]}… from the build "
            f"cache: {exc}; making it here.")
        return False
    except (registry.RegistryError, OSError) as exc:
        cache.disable("buildroot", exc)
        return False
    finally:
        blob.unlink(missing_ok=True)
        files.force_rmtree(work)
    say(f"buildroot: pulled from {cache.url}/{repo} in {time.time() - started:.1f} s")
    return True


def push_buildroot(cfg):
    """Upload the configured build root (read-write mode) unless the registry has it;
    True when it did."""
    cache = for_config(cfg)
    if not cache.active or cache.mode != "read-write" or cache.push_refused:
        return False
    repo = registry.repository_name(cache.settings["repository"], "buildroot")
    tag = buildroot.spec_digest(cfg)
    folder = buildroot.folder(cfg)
    layer = folder.with_name(f".{folder.name}.push-{files.unique_suffix()}.tar.gz")
    started = time.time()
    try:
        if cache.client().manifest_digest(repo, tag):
            return False                # already there (another run or machine pushed it)
        ident = buildroot.identity(cfg)
        layer_digest, layer_size = write_layer(folder, layer, cfg.source_date_epoch,
                                               cache.settings["gzip_level"])
        config = canonical.dumps({"format": FORMAT, "spec": ident["spec"],
                                  "identity": ident["digest"],
                                  "packages": ident["packages"]}).encode()
        config_desc = {"mediaType": MEDIA_BUILDROOT, "size": len(config),
                       "digest": "sha256:" + hashlib.sha256(config).hexdigest()}
        client = cache.client()
        client.upload_blob(repo, config_desc["digest"], len(config), lambda: config)
        client.upload_blob(repo, layer_digest, layer_size, lambda: open(layer, "rb"))
        body = canonical.dumps({
            "schemaVersion": 2, "mediaType": registry.MEDIA_MANIFEST, "config": config_desc,
            "layers": [{"mediaType": MEDIA_LAYER, "size": layer_size, "digest": layer_digest}],
            "annotations": {f"{ANNOTATION}.buildroot": ident["digest"]}}).encode()
        client.put_manifest(repo, tag, body)
    except (registry.AuthFailed, registry.Rejected) as exc:
        cache.refuse_push("buildroot", exc)
        return False
    except UserError as exc:        # the root changed under the writer: never push it
        say(f"warning: buildroot: not pushed: {exc.message}")
        return False
    except (registry.RegistryError, OSError, ValueError, KeyError) as exc:
        cache.disable("buildroot", exc)
        return False
    finally:
        layer.unlink(missing_ok=True)
    say(f"buildroot: pushed to {cache.url}/{repo}:{tag[:12]}… ({_size(layer_size)}) in "
        f"{time.time() - started:.1f} s")
    return True
