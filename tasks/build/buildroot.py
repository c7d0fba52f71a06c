"""The build root: the pinned Debian tree every build runs in, instead of the host's.

Builds see the build root's /usr (its gcc builds stage 0; its bash, make, perl, sed,
python run every build) and its /etc, never the host's. It is made once by Debian's own
tool, mmdebstrap, from config.yaml's `buildroot:` (suite and package list), in a user
namespace (mmdebstrap --mode=unshare), and kept in

  <buildroot dir>/<spec digest>/   (buildroot.dir, default cache/buildroot)
    tree/           the root (owners dropped; setuid, setgid and group/other write bits
                    cleared; no device nodes: the sandbox makes /dev)
    identity.json   the spec, the sorted package=version list and their digest: WRITTEN
                    LAST, so a killed creation leaves no root that counts

Its identity digest is an input of every component key (tasks/build/key.py): a root
with another package version gives other keys. A Debian point release changes nothing
until the user asks for a new root (`doit clean buildroot`, then `doit buildroot`) or
changes the package list. The build cache can hold a root (ship/buildcache.py), so a
second machine builds in the identical tree.
"""
import os
import shutil
import subprocess
import time
from pathlib import Path

from tasks.build import manifest
from tasks.core import canonical, files
from tasks.core.errors import UserError
from tasks.core.log import say
from tasks.sources.debian import host_mirror
from tasks.sources.unpack import extract

# files of /etc the sandbox lays over the root's (sandbox.GENERATED_ETC, and the host's
# name resolution for a recipe with network: true): they must exist in the read-only tree
MOUNT_POINTS = ("etc/passwd", "etc/group", "etc/hosts", "etc/nsswitch.conf",
                "etc/resolv.conf", "etc/gai.conf", "etc/protocols", "etc/services")


FIXED_FILES = {"etc/hostname": "dappdeps\n", "etc/resolv.conf": "", "etc/apt/sources.list": ""}
# no build needs the password files (the sandbox generates passwd and group)
REMOVED = ("etc/shadow", "etc/shadow-", "etc/gshadow", "etc/gshadow-")
# logs and caches of the creation: dates and download state, nothing a build reads
EMPTIED = ("var/log", "var/cache", "var/lib/apt/lists")


def spec(cfg):
    """What the root is made from (the mirror is not in it: any mirror serves the same
    packages, and the package=version list in identity.json says what came)."""
    settings = cfg.data["buildroot"]
    return {"suite": settings["suite"], "variant": "minbase", "architecture": "amd64",
            "packages": sorted(set(settings["packages"]))}


def spec_digest(cfg):
    return canonical.digest_of(canonical.dumps(spec(cfg)))


def folder(cfg):
    return cfg.buildroot_dir / spec_digest(cfg)[:16]


def tree(cfg):
    return folder(cfg) / "tree"


def identity(cfg):
    """identity.json of the configured root, or None when it is not made yet."""
    path = folder(cfg) / "identity.json"
    try:
        doc = canonical.load(path)
    except (OSError, ValueError):
        return None
    return doc if doc.get("spec") == spec(cfg) else None


def identity_digest(cfg):
    doc = identity(cfg)
    return doc["digest"] if doc else None


def identity_of(spec_doc, packages):
    return {"spec": spec_doc, "packages": packages,
            "digest": canonical.digest_of(canonical.dumps({"spec": spec_doc,
                                                           "packages": packages}))}


def installed_packages(root):
    """Sorted package=version lines from the root's dpkg status (read without following
    a link: the tree is only trusted inside the sandbox)."""
    path = Path(root) / "var" / "lib" / "dpkg" / "status"
    for part in (path.parents[2], path.parents[1], path.parent, path):
        if part.is_symlink():
            raise UserError(f"{part} is a link; the build root is damaged.",
                            hint="Make it again: doit clean buildroot && doit buildroot")
    found, name, version, ok = [], None, None, False
    for line in path.read_text(errors="replace").splitlines() + [""]:
        if not line.strip():
            if name and version and ok:
                found.append(f"{name}={version}")
            name, version, ok = None, None, False
        elif line.startswith("Package:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("Version:"):
            version = line.split(":", 1)[1].strip()
        elif line.startswith("Status:"):
            ok = line.split(":", 1)[1].split()[-1:] == ["installed"]
    return sorted(found)


def finish_tree(root):
    """Make an unpacked tree a build root: clear setuid/setgid and group/other write
    bits (a build needs neither; the cache must not hold setuid-root files), and create
    the files the sandbox binds over (a read-only tree cannot get new mount points)."""
    root = Path(root)
    manifest.drop_privileges(root)          # the same rule as every captured output
    # mmdebstrap copies the host's hostname and resolv.conf into the tree and writes the
    # mirror into apt's sources: none of the host may reach a build, and the identity
    # (the package list) must say everything that differs between two roots
    for rel, text in FIXED_FILES.items():
        path = root / rel
        if os.path.lexists(path):
            os.unlink(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, 0o644)
    for rel in REMOVED:
        if os.path.lexists(root / rel):
            os.unlink(root / rel)
    for rel in EMPTIED:
        for child in (root / rel).glob("*") if (root / rel).is_dir() else ():
            if child.is_dir() and not child.is_symlink():
                files.force_rmtree(child)
            else:
                child.unlink()
    for rel in MOUNT_POINTS:
        path = root / rel
        if os.path.lexists(path) and not path.is_file():
            os.unlink(path)                 # e.g. resolv.conf as a link: a plain file
        if not os.path.lexists(path):
            path.write_text("")
    for sub in ("tmp", "proc", "dev", "dappdeps"):
        (root / sub).mkdir(exist_ok=True)


def create(cfg, log_path):
    """Make the configured build root with mmdebstrap; returns its identity."""
    settings = cfg.data["buildroot"]
    want = spec(cfg)
    if not want["packages"]:
        raise UserError("lists no packages: a build root needs at least a compiler.",
                        cfg.path, "buildroot.packages", "See docs/buildroot.md for the list.")
    if shutil.which("mmdebstrap") is None:
        raise UserError("mmdebstrap is not installed: it makes the build root.",
                        cfg.path, "buildroot",
                        "apt-get install mmdebstrap (or pull the root from a build cache).")
    mirror = settings["mirror"] or host_mirror()
    if not mirror:
        raise UserError("no Debian mirror: the host's apt sources name none.", cfg.path,
                        "buildroot.mirror", "Set buildroot.mirror to a Debian mirror URL.")
    target = folder(cfg)
    work = target.with_name(f".{target.name}.new-{files.unique_suffix()}")
    files.force_rmtree(work)
    work.mkdir(parents=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    argv = ["mmdebstrap", "--mode=unshare", f"--variant={want['variant']}",
            f"--architectures={want['architecture']}",
            "--include=" + ",".join(want["packages"]), "--format=tar",
            want["suite"], str(work / "root.tar"), mirror]
    say(f"buildroot: making a {want['suite']} root with {len(want['packages'])} packages "
        f"from {mirror}; log: {log_path}")
    try:
        with open(log_path, "w") as log:
            log.write("# " + " ".join(argv) + "\n")
            log.flush()
            status = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL).returncode
        if status != 0:
            raise UserError(f"mmdebstrap failed (exit status {status}); last lines:\n"
                            + "".join("  | " + line for line in files.tail(log_path, 15)),
                            cfg.path, "buildroot",
                            f"Check the suite and package names; full log: {log_path}")
        install(work / "root.tar", work, want)
    except BaseException:
        files.force_rmtree(work)
        raise
    doc = canonical.load(work / "identity.json")
    publish(cfg, work)
    say(f"buildroot: {len(doc['packages'])} packages, identity {doc['digest'][:12]}…, "
        f"made in {time.time() - started:.0f} s")
    return doc


def install(archive, work, want):
    """Unpack a root tarball into work/tree (the hostile-archive rules of
    sources/unpack.py, links read as inside a root) and write work/identity.json."""
    (work / "tree").mkdir()
    extract(archive, work / "tree", rooted=True)
    os.unlink(archive)
    finish_tree(work / "tree")
    packages = installed_packages(work / "tree")
    if not packages:
        raise UserError(f"{archive}: the root has no installed packages (no dpkg status).")
    # the same layout as a component's output, so the build cache carries it as one
    files.write_atomic(work / "manifest.json", canonical.dumps(
        {"format": manifest.FORMAT, "buildroot": want, "entries": manifest.scan_tree(work / "tree")}))
    files.write_atomic(work / "build.json", canonical.dumps({"made": int(time.time())}))
    files.write_atomic(work / "identity.json", canonical.dumps(identity_of(want, packages)))


def check_pulled(cfg, work, expected):
    """A root unpacked from the build cache (hostile input): its tree must be what its
    manifest.json lists, with no setuid file, and its packages must give the identity
    the registry named. Writes work/identity.json; raises UserError otherwise."""
    doc = canonical.load(work / "manifest.json")
    entries = manifest.scan_tree(work / "tree")
    if entries != doc.get("entries") or doc.get("buildroot") != spec(cfg):
        raise UserError("the pulled build root differs from its manifest.json")
    if manifest.privileged(entries):
        raise UserError("the pulled build root holds setuid/setgid files")
    found = identity_of(spec(cfg), installed_packages(work / "tree"))
    if found["digest"] != expected:
        raise UserError(f"the pulled build root's packages give identity {found['digest']}, "
                        f"not {expected}")
    for rel in MOUNT_POINTS:
        if os.path.islink(work / "tree" / rel) or not (work / "tree" / rel).is_file():
            raise UserError(f"the pulled build root's {rel} is not a plain file")
    files.write_atomic(work / "identity.json", canonical.dumps(found))


def publish(cfg, work):
    """Swap a finished root in by renames (identity.json is already inside it)."""
    target = folder(cfg)
    old = target.with_name(f".{target.name}.old-{files.unique_suffix()}")
    files.syncfs(work)
    if target.exists():
        os.rename(target, old)
    os.rename(work, target)
    files.force_rmtree(old)


def remove(cfg):
    """`doit clean buildroot`: forget the root (its identity first)."""
    (folder(cfg) / "identity.json").unlink(missing_ok=True)
    files.force_rmtree(folder(cfg))


def sandbox_binds(cfg):
    """bwrap arguments that make the root the sandbox's /usr, /bin, /lib..., /etc.
    Top-level links (merged /usr: bin -> usr/bin) are recreated, never bound: the host
    never follows a link of the tree."""
    root = tree(cfg)
    if identity(cfg) is None:
        raise UserError(f"the build root {root} is not made yet.", cfg.path, "buildroot",
                        "Run `doit buildroot` (a plain `doit` does it first).")
    args = []
    for name in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc"):
        path = root / name
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), f"/{name}"]
        elif path.is_dir():
            args += ["--ro-bind", str(path), f"/{name}"]
    return args
