"""The build engine: run one component's build in its sandbox and capture its output.

Everything happens in cache/work/<dist>/<component>/ (wiped at the start of every
build). Only after the build succeeded is the captured output published into
cache/stage/<dist>/<component>/ (tasks/build/stagedir.py) and the key written last.
"""
import errno
import os
import re
import subprocess
import shutil
import time

from doit.exceptions import TaskFailed

from tasks.build import buildroot, manifest, sandbox, stagedir
from tasks.build.key import component_key, input_digests
from tasks.core import canonical, files
from tasks.core.errors import DiskFull, UserError
from tasks.core.log import duration, printable, say
from tasks.model.component import BUILD, SRC
from tasks.sources.download import checked
from tasks.sources.unpack import extract_files, prepare_dest, unpack

LOG_TAIL = 40


def build(comp, reason):
    """Build the component in its sandbox and publish its output; True or TaskFailed.
    The caller holds the component's lock (stagedir.locked) and asked the build cache.
    The outputs it mounts are held shared (stagedir.using; the build stage holds them on
    through the push) and must still be what its key was computed from at publish time."""
    say(f"{comp.task}: building ({reason}); log: {comp.log_path}")
    started = time.time()
    try:
        with stagedir.using(comp.cfg, inputs(comp), comp.task):
            fetched = prepare_work(comp)
            stamp = component_key(comp, fetched)
            status = run_sandboxed(comp)
            if status != 0:
                return _failure(comp, status)
            entries = manifest.scan_tree(comp.work_dir / "upper")
            check_overwrites(comp, entries)
            changed = changed_input(comp, stamp.inputs)
            if changed:
                return _input_changed(comp, changed)
            # dependents of another run wait from the swap until the key is in place
            with stagedir.replacing(comp):
                digest = stagedir.publish(comp, comp.work_dir / "upper", entries, started,
                                          fetched)
                if sandbox.stopping():
                    # the signal came after the sandbox ended: the output is in place but
                    # does not count; the next run builds it again (reported "interrupted")
                    raise sandbox.Interrupted("stopped by a signal before its key was written")
                stamp.write(manifest=digest, content=manifest.content_digest(entries),
                            seconds=round(time.time() - started, 1))
    except sandbox.Interrupted as exc:
        return TaskFailed(f"{comp.task}: interrupted: {exc}; not counted as built")
    except UserError as exc:
        if _says_disk_full(exc.message):    # sources/unpack.py words the OSError
            return _disk_full(comp, OSError(errno.ENOSPC, "No space left on device"))
        _log(comp, exc.render())
        return TaskFailed(f"{comp.task}: {exc.render()}\nlog: {comp.log_path}")
    except OSError as exc:
        if not files.is_disk_full(exc):
            raise
        return _disk_full(comp, exc)
    files.force_rmtree(comp.work_dir)
    say(f"{comp.task}: done in {duration(time.time() - started)}, "
        f"{sum(1 for e in entries if e['type'] == 'file')} files")
    return True


def inputs(comp):
    """(distribution, component) of every output the build mounts (run_sandboxed): its
    dependencies in its own distribution and the outputs of other distributions it
    builds on (comp.foreign_inputs). These are held shared while it builds."""
    outputs = [(comp.dist.name, d) for d in comp.local_deps]
    outputs += [(dist, c) for dist, comps in comp.foreign_inputs.items() for c in comps]
    return [o for o in outputs if o != (comp.dist.name, comp.name)]


def changed_input(comp, recorded):
    """The first input whose output is no longer what `recorded` (the inputs of the key
    the build was made for) says, as "<dist>/<component> (content <old> -> <new>)"; None
    when all are unchanged. It reads what the key reads (key.input_digests), again."""
    for field, now in input_digests(comp).items():
        path = _first_difference(recorded.get(field), now)
        if path is not None:
            names, old, new = path
            name = "/".join(([comp.dist.name] if field == "depends" else []) + names)
            return f"{name} (content {_short(old)} -> {_short(new)})"
    return None


def _first_difference(old, new, names=()):
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = _first_difference(old.get(key), new.get(key), names + (key,))
            if found is not None:
                return found
        return None
    return None if old == new else (list(names), old, new)


def _short(digest):
    return digest[:12] if isinstance(digest, str) else "none"


def _input_changed(comp, changed):
    """An input changed under the build (replaced without the lock: by hand, by an older
    dappdeps): nothing of it counts; no output, no key, no push."""
    files.force_rmtree(comp.work_dir)
    message = (f"{comp.task}: its input {changed} changed while it was built; the output "
               f"is not published and no key is written (work folder removed). Run the "
               f"build again.")
    _log(comp, message)
    say(message)
    return TaskFailed(message)


def _says_disk_full(text):
    return "No space left on device" in text or "Disk quota exceeded" in text


def _log(comp, text):
    try:
        files.append(comp.log_path, text)
    except OSError:
        pass                                # a full disk: the message still says it


def _disk_full(comp, exc):
    """ENOSPC while unpacking, building, capturing or publishing: one paragraph naming the
    folder and the space; the work folder goes (it only fills the disk), no key."""
    needed = files.tree_size(comp.work_dir)
    files.force_rmtree(comp.work_dir)
    error = DiskFull(exc, files.existing_parent(comp.work_dir), needed,
                     what=f"{comp.task}, writing")
    _log(comp, error.render())
    say(error.render())
    return TaskFailed(f"{comp.task}: {error.render()}")


def prepare_work(comp, work=None, log_path=None):
    """Fresh work folder: sources unpacked, patches and script in place.

    work/log_path default to the build's own; the upstream tests (stages/test.py)
    redo the same build in another folder so they never touch the build's."""
    work = work or comp.work_dir
    log_path = log_path or comp.log_path
    if work.exists():
        files.force_rmtree(work)
    for sub in ("src", "build", "upper", "ovwork", "merged", "meta", "patches"):
        (work / sub).mkdir(parents=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(f"# {comp.task} {comp.recipe.version} started "
                        f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    fetched, archives = {}, {}
    for src in comp.recipe.sources:
        hit = checked(src, comp.cfg)
        if hit is None:
            raise UserError(f"source {src.id} is not in the download cache.",
                            comp.recipe.path, "sources", "Run `doit fetch` first.")
        fetched[src.id] = hit.alternative
        archives[src.id] = hit.path
        (work / "meta" / f"{src.id}.alternative").write_text(hit.alternative.file)
        dest = work / "src" / src.dest if src.dest else work / "src"
        if src.extract:
            unpack(hit.path, dest, hit.alternative.inner, work)
        else:
            # never through a link an earlier source unpacked
            prepare_dest(dest, work / "src")
            target = dest / hit.alternative.file
            if os.path.lexists(target):
                raise UserError(f"{hit.alternative.file} already exists in the source tree "
                                "(an earlier source put it there).", comp.recipe.path, "sources")
            with open(hit.path, "rb") as src_fh:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src_fh, out)
    debian_patches(comp, archives, work)
    for i, patch in enumerate(comp.recipe.patches):
        shutil.copy2(patch, work / "patches" / f"{i:03d}-{patch.name}")
    (work / "build.sh").write_text(comp.script(fetched))
    return fetched


def debian_patches(comp, archives, work):
    """The recipe's Debian patches, taken out of the verified Debian tarball into
    work/patches/debian/ (component.debian_patch_files), where the script applies them."""
    r = comp.recipe
    if not r.debian_patches:
        return
    (work / "patches" / "debian").mkdir()
    wanted = [(patch.name, work / "patches" / rel) for patch, rel in comp.debian_patch_files()]
    archive = archives[r.debian_source]
    missing = extract_files(archive, wanted, work)
    if missing:
        i = [patch.name for patch in r.debian_patches].index(missing[0])
        raise UserError(f"the Debian patch {missing[0]} is not a file of "
                        f"{os.path.basename(archive)}.", r.path,
                        f"debian_patches.patches[{i}].name",
                        "Name it by its path in the tarball, as debian/patches/series lists it "
                        "below debian/patches/ (`tar tf` the file to see them).")


def run_sandboxed(comp, work=None, log_path=None, script="build.sh", lowers=None,
                  timeout=None):
    """Run work/<script> in the component's sandbox (by default: its build).

    lowers: the components whose outputs $PREFIX shows under the upper folder, in
    order (default: the component's dependencies, as a build sees them)."""
    work = work or comp.work_dir
    cfg = comp.cfg
    below = comp.local_deps if lowers is None else lowers
    own = sandbox.Overlay(work / "merged",
                          [cfg.tree_of(comp.dist.name, d) for d in reversed(below)],
                          upper=work / "upper", work=work / "ovwork")
    overlays = [(own, comp.dist.prefix, True)]
    # other distributions: only what the build depends on (component.foreign_inputs),
    # the same outputs its key holds; one used only at run time is not there at all
    for used, comps in comp.foreign_inputs.items():
        lowers = [cfg.tree_of(used, c) for c in reversed(comps)]
        overlays.append((sandbox.Overlay(work / "used" / used, lowers),
                         cfg.distributions[used].prefix, False))
    argv = sandbox.command(
        overlays=overlays,
        mounts=[(work / "src", SRC, True), (work / "build", BUILD, True)],
        binds=[(work / "build.sh", "/dappdeps/build.sh"), (work / "meta", "/dappdeps/meta"),
               (work / "patches", "/dappdeps/patches")],
        env=comp.environment(), argv=["/bin/bash", f"/dappdeps/{script}"],
        network=comp.recipe["network"], scratch=work, base=cfg.cache,
        root=buildroot.sandbox_binds(cfg))
    timeout = timeout or comp.recipe["timeout"]
    log_path = log_path or comp.log_path
    try:
        return sandbox.run(argv, log_path, timeout=timeout)
    except subprocess.TimeoutExpired:
        field = "timeout" if script == "build.sh" else "test_timeout"
        message = (f"{comp.task}: stopped after {timeout} s, its time limit (recipe field "
                   f"'{field}'); every process of the step was killed. Log: {log_path}")
        files.append(log_path, message)
        raise UserError(message, comp.recipe.path, field,
                        "If it is just slow here, raise the limit in the recipe.") from None
    finally:
        # whatever the step left (a failed build's folders are kept for inspection):
        # no setuid file and no world-writable folder may outlive it on the host
        for sub in ("upper", "src", "build"):
            if (work / sub).is_dir():
                dropped = manifest.drop_privileges(work / sub,
                                                   comp.dist.setuid if sub == "upper" else ())
                if dropped and sub == "upper":
                    files.append(log_path, "# setuid/setgid bits dropped (not in the "
                                 f"distribution's setuid list): {', '.join(dropped)}")


def check_overwrites(comp, entries):
    """A path of a dependency may only be rewritten by a component that replaces it."""
    owners = {}
    for dep in comp.local_deps:
        path = comp.cfg.stage_of(comp.dist.name, dep) / "manifest.json"
        for entry in canonical.load(path)["entries"]:
            if entry["type"] != "dir":
                owners[entry["path"]] = dep
    deleted = set(manifest.hidden_below(entries, owners))
    for entry in entries + [{"path": p, "type": "hidden"} for p in sorted(deleted)]:
        owner = owners.get(entry["path"])
        if entry["type"] != "dir" and owner and owner not in comp.recipe.replaces:
            verb = "installed again" if entry["type"] not in ("whiteout", "hidden") else "deleted"
            raise UserError(
                f"the same path {entry['path']} is {verb} by '{comp.name}' but belongs to its "
                f"dependency '{owner}'.", comp.recipe.path, "replaces",
                f"If '{comp.name}' is meant to reinstall it, add '{owner}' to replaces.")


def _failure(comp, status):
    tail = files.tail(comp.log_path, LOG_TAIL)
    hint = ""
    outside = [line for line in tail if _outside_write(line, comp.dist.prefix)]
    if outside:
        hint = ("\nThe build wrote (or tried to) outside its sandbox: only $PREFIX "
                f"({comp.dist.prefix}), $SRCDIR, $BUILDDIR and /tmp are writable; /etc, $HOME, "
                "the host and other prefixes are not. First such line:\n  " + outside[0].strip())
    unapplied = [line.strip() for line in tail if line.startswith("!!! debian patch ")]
    if unapplied:          # component.script(): a Debian patch that does not apply
        hint += "\n" + unapplied[0][4:] + f" (recipe field 'debian_patches' of {comp.recipe.path})"
    kept = f"Work folder kept for inspection: {comp.work_dir}"
    if any(_says_disk_full(line) for line in tail):
        error = DiskFull(OSError(errno.ENOSPC, "No space left on device"),
                         files.existing_parent(comp.work_dir), files.tree_size(comp.work_dir),
                         what=f"{comp.task}, a write inside its sandbox")
        files.force_rmtree(comp.work_dir)
        kept = f"Work folder removed (it only filled the disk): {comp.work_dir}"
        hint += "\n" + error.render()
    message = (f"{comp.task}: build failed (exit status {status}). Last {len(tail)} lines of "
               f"{comp.log_path}:\n" + "".join("  | " + line for line in tail) + hint +
               f"\nFull log: {comp.log_path}\n{kept}")
    say(message)
    return TaskFailed(printable(message.splitlines()[0] + hint))


_DENIED = re.compile(r"(?:^|[\s'\"`])(/[^\s:'\"]+)'?: (Read-only file system|No such file or directory|Directory nonexistent)")


def _outside_write(line, prefix):
    match = _DENIED.search(line)
    if not match:
        return False
    path = match.group(1)
    if match.group(2) == "Read-only file system":
        return True
    writable = (prefix + "/", SRC + "/", BUILD + "/", "/tmp/")
    return not path.startswith(writable) and not path.startswith(("/usr/", "/bin/", "/lib"))