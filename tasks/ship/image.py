"""Image export: a distribution's tree as a one-layer container image, without a daemon.

export_image() writes ONE uncompressed tar that is at the same time
  - a docker-archive: manifest.json with RepoTags (`docker load`, `podman load`), and
  - an OCI image layout: oci-layout, index.json, blobs/sha256/<digest>
    (skopeo `oci-archive:`, registries' tools),
the way `docker save` of Docker 25+ does. Its single layer holds only the prefix
(/.dapp/deps/<name>/<version>) and the parent folders; the image config declares the
prefix as a VOLUME and carries OCI and per-component labels.

Hard links of a component's tree (manifest entries with "link") stay hard links: the
first path of the inode the image holds is a regular file, the others link to it.

Deterministic: entries in manifest (path) order, written by tasks/ship/tarwriter.py
(mtime = SOURCE_DATE_EPOCH, uid/gid 0, no names), stable JSON. Two exports of the same
inputs are byte-identical, hence same digests.

Streamed: the layer is written straight into the outer tar as a member whose header is
patched once the layer's size and sha256 are known (the blob name is its digest); the
tar writer's FdSink copies and hashes file contents with flat memory.

What goes in: select.py (include / exclude). Stripped (strip=True, the image option's
default): strip.py; cache/stage keeps the unstripped originals.
"""
import hashlib
import json
import os
import re
import time
from pathlib import Path
from platform import machine as host_machine

from tasks.build.manifest import privileged
from tasks.core.errors import DiskFull, UserError
from tasks.core.files import force_rmtree, is_disk_full, unique_suffix, write_atomic
from tasks.ship.select import dangling_links, select
from tasks.ship.strip import Stripper
from tasks.ship.tarwriter import BLOCK, DIR, FILE, FdSink, TarStream, tar_header, write_all

# Bump when the exported bytes change for the same inputs: every image is exported again.

LABEL_PREFIX = "io.dappdeps"    # io.dappdeps.component.<name> = <version>, ...

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"


# ---- paths -------------------------------------------------------------------------
def image_paths(cache, name, version, platform=None):
    """Where image:<name> writes: the tar, its result (.json/.digest) and its stamp.
    platform (e.g. "linux/arm64"): that platform's export of a multi-platform image,
    <name>-<version>-arm64.tar; None: the single-platform names of before."""
    base = Path(cache) / "images" / f"{name}-{version}{platform_suffix(platform)}"
    return {"tar": base.with_name(base.name + ".tar"),
            "json": base.with_name(base.name + ".json"),
            "digest": base.with_name(base.name + ".digest"),
            "stamp": base.with_name(base.name + ".stamp")}


def read_result(path):
    """The .json written next to an exported tar, or None."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# ---- image metadata ----------------------------------------------------------------
def rfc3339(epoch):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


def _arch():
    machine = host_machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
            "armv7l": "arm", "i686": "386", "i386": "386", "ppc64le": "ppc64le",
            "s390x": "s390x", "riscv64": "riscv64"}.get(machine, machine)


def host_platform():
    """"linux/amd64" on an x86_64 Linux host: what an image without a platform is for."""
    return f"linux/{_arch()}"


def platform_fields(text=None):
    """"linux/arm64" or "linux/arm64/v8" -> the OCI platform object ({"architecture",
    "os"[, "variant"]}); None -> the host's."""
    parts = (text or host_platform()).strip().split("/")
    if len(parts) not in (2, 3) or not all(re.fullmatch(r"[a-z0-9_]+", p) for p in parts):
        raise UserError(f"platform {text!r} is not of the form os/architecture[/variant] "
                        "(e.g. linux/arm64).")
    fields = {"architecture": parts[1], "os": parts[0]}
    if len(parts) == 3:
        fields["variant"] = parts[2]
    return fields


def platform_suffix(text=None):
    """"" for None; "-arm64" for linux/arm64, "-freebsd-amd64", "-arm-v7": file names."""
    if text is None:
        return ""
    fields = platform_fields(text)
    words = ([] if fields["os"] == "linux" else [fields["os"]]) + [fields["architecture"]]
    return "-" + "-".join(words + ([fields["variant"]] if "variant" in fields else []))


def _blob(obj):
    """Stable JSON bytes of a blob (sorted keys, no spaces)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def licenses_expression(licenses):
    """SPDX AND of the components' license expressions (compound ones in parentheses)."""
    parts = []
    for lic in sorted({x.strip() for x in licenses if x and x.strip()}):
        compound = re.search(r"\s(AND|OR|WITH)\s", lic) and not (
            lic.startswith("(") and lic.endswith(")"))
        parts.append(f"({lic})" if compound and len(licenses) > 1 else lic)
    return " AND ".join(parts)


def image_labels(doc, entries, title):
    """OCI labels plus one label per component of the image (version, source sha256s)."""
    providers = {e["component"] for e in entries if e["type"] != "dir" and e.get("component")}
    comps = [c for c in doc.get("components", []) if c["name"] in providers]
    labels = {
        "org.opencontainers.image.title": title,
        "org.opencontainers.image.version": doc["version"],
        "org.opencontainers.image.licenses": licenses_expression(
            [c.get("license", "") for c in comps]),
        f"{LABEL_PREFIX}.distribution": doc["distribution"],
        f"{LABEL_PREFIX}.prefix": doc["prefix"],
        f"{LABEL_PREFIX}.components": " ".join(sorted(c["name"] for c in comps)),
    }
    for comp in comps:
        key = f"{LABEL_PREFIX}.component.{comp['name']}"
        labels[key] = str(comp.get("version", ""))
        shas = []
        for src in comp.get("sources", []):
            if isinstance(src, dict) and src.get("sha256"):
                shas.append(f"{src.get('file', '')}@sha256:{src['sha256']}")
        labels[key + ".sources"] = " ".join(shas)
    return labels


def normalized_name(repository, tag):
    """docker.io/library/x:tag style name, as containerd (Docker 25+) annotates it."""
    first = repository.split("/", 1)[0]
    if "/" in repository and ("." in first or ":" in first or first == "localhost"):
        full = repository
    elif "/" in repository:
        full = f"docker.io/{repository}"
    else:
        full = f"docker.io/library/{repository}"
    return f"{full}:{tag}"


# ---- export ------------------------------------------------------------------------
def export_image(manifest_path, stage_dir, out_tar, repository, tag, include=("**",),
                 exclude=(), source_date_epoch=0, labels=None, title=None, fsync=True,
                 strip=False, setuid=(), platform=None, strip_tool=None):
    """Write out_tar (docker-archive + OCI layout) and, next to it, <stem>.json and
    <stem>.digest. Returns the result dict (also the content of <stem>.json).

    manifest_path  the distribution's merged manifest (cache/stage/<dist>.manifest.json)
    stage_dir      cache/stage/<dist>: a file's content is <stage_dir>/<component>/tree/<path>;
                   None = the folder named after the distribution next to the manifest
    include/exclude  globs on prefix-relative paths; parents of included paths are kept
    labels         extra (or overriding) image labels, e.g. org.opencontainers.image.source
    title          org.opencontainers.image.title (default: last part of repository)
    fsync          flush the tar to disk before renaming it into place (crash safety)
    setuid         paths allowed to ship with a setuid/setgid bit; any other such file
                   fails the export (the distribution's `setuid:` list)
    strip          ship `strip --strip-unneeded` copies of the host-architecture ELF
                   executables and shared libraries (the stage keeps the originals); the
                   image task passes the image's `strip` option (default true there)
    platform       "linux/arm64": the platform the tree was built for (the config's
                   architecture/os and the index's platform); None: the host's, as
                   before platforms existed (same bytes)
    strip_tool     (strip program, ELF machine) for another platform's tree (the host's
                   <triplet>-strip); None: the host's strip and machine
    """
    manifest_path = Path(manifest_path)
    out_tar = Path(out_tar)
    try:
        doc = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the distribution's manifest ({exc}).", manifest_path,
                        hint="Run its assemble task first.") from None
    stage_dir = Path(stage_dir) if stage_dir else manifest_path.parent / doc["distribution"]
    prefix = doc["prefix"].strip("/")
    epoch = int(source_date_epoch)
    target = platform_fields(platform)
    entries = select(doc["entries"], include or ["**"], exclude or [])
    if not any(e["type"] != "dir" for e in entries):
        raise UserError(f"image {repository}:{tag} would hold no file: the include patterns "
                        f"{list(include)} minus the exclude patterns {list(exclude)} select "
                        f"nothing of distribution '{doc['distribution']}'.")
    unwanted = privileged(entries, setuid)
    if unwanted:
        raise UserError(f"image {repository}:{tag} would ship {len(unwanted)} setuid/setgid "
                        f"file(s) that config.yaml does not allow: {', '.join(unwanted[:5])}.",
                        hint=f"List them under distributions.{doc['distribution']}.setuid to "
                        "ship them so (docs/security.md says when that is sane), or rebuild: "
                        "a build drops the bits of files not in that list.")
    all_labels = image_labels(doc, entries, title or repository.rsplit("/", 1)[-1])
    all_labels["org.opencontainers.image.created"] = rfc3339(epoch)
    all_labels.update({k: str(v) for k, v in (labels or {}).items() if v is not None})
    all_labels = {k: v for k, v in all_labels.items() if v != ""}

    out_tar.parent.mkdir(parents=True, exist_ok=True)
    # before any output exists: a missing strip fails the export cleanly
    # scratch names unique to this process and thread; a killed export's are swept by
    # the next run (build/leftovers.py reads the pid back)
    strip_dir = out_tar.with_name(f".{out_tar.name}.strip-{unique_suffix()}")
    if strip:
        strip_dir.mkdir(exist_ok=True)
    stripper = None
    tmp = out_tar.with_name(f".{out_tar.name}.tmp{unique_suffix()}")
    try:
        stripper = Stripper(strip_dir, *(strip_tool or ())) if strip else None
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            result = _write_image(fd, doc, entries, stage_dir, prefix, repository, tag, epoch,
                                  all_labels, stripper, target)
            if fsync:
                os.fsync(fd)
        except BaseException as exc:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            if is_disk_full(exc):
                needed = sum(e.get("size", 0) for e in entries if e["type"] == "file")
                raise DiskFull(exc, out_tar.parent, needed, what=f"exporting {out_tar.name}, writing") from None
            raise
        os.close(fd)
    finally:
        if stripper is not None:
            stripper.close()
        force_rmtree(strip_dir)
    result["stripped"] = stripper.summary() if stripper else {
        "files": 0, "bytes_saved": 0, "tool": None, "failed": []}
    os.replace(tmp, out_tar)
    result["size"] = out_tar.stat().st_size
    result["dangling_links"] = dangling_links(entries)[:20]
    stem = out_tar.name[:-4] if out_tar.name.endswith(".tar") else out_tar.name
    write_atomic(out_tar.with_name(stem + ".json"),
                 json.dumps(result, sort_keys=True, indent=1) + "\n")
    write_atomic(out_tar.with_name(stem + ".digest"), result["digest"] + "\n")
    return result


def _write_image(fd, doc, entries, stage_dir, prefix, repository, tag, epoch, labels,
                 stripper, target):
    outer = []

    def member(name, data=b"", typeflag=FILE, mode=0o644):
        outer.append(tar_header(name, len(data), mode, epoch, typeflag))
        if data:
            outer.append(data + b"\0" * (-len(data) % BLOCK))

    # 1. the layer, streamed as the first member; its header is patched afterwards
    member("blobs/", typeflag=DIR, mode=0o755)
    member("blobs/sha256/", typeflag=DIR, mode=0o755)
    write_all(fd, b"".join(outer))
    outer.clear()
    header_at = os.lseek(fd, 0, os.SEEK_CUR)
    write_all(fd, b"\0" * BLOCK)
    sink = FdSink(fd)
    stream = TarStream(sink, epoch)
    files = 0
    content = 0                         # bytes of file contents as shipped (after strip)
    stage = str(stage_dir)
    # hard links: (component, first path) of each inode with several paths, and the
    # member written for it; that first path may be gone (a whiteout, an opaque folder,
    # a replacing component, a pattern), then the first path still here is written
    heads = {(e["component"], e["link"]) for e in entries if e.get("link")}
    linked = {}
    try:
        parts = prefix.split("/")
        for i in range(1, len(parts) + 1):
            stream.directory("/".join(parts[:i]), 0o755)
        for e in entries:
            name = f"{prefix}/{e['path']}"
            kind = e["type"]
            if kind == "dir":
                stream.directory(name, e.get("mode", 0o755))
            elif kind == "symlink":
                stream.symlink(name, e["target"])
            elif kind == "file":
                group = (e["component"], e.get("link", e["path"]))
                if group in linked:
                    stream.hardlink(name, linked[group], e.get("mode", 0o644))
                    files += 1
                    continue
                if group in heads:
                    linked[group] = name    # the member later paths of the inode link to
                src = f"{stage}/{e['component']}/tree/{e['path']}"
                size = e["size"]
                if stripper is not None:
                    src, size = stripper.prepare(src, size, e["path"])
                try:
                    stream.file(name, e.get("mode", 0o644), size, src)
                finally:
                    if stripper is not None:
                        stripper.release(src)
                files += 1
                content += size
            else:
                raise UserError(f"entry {e['path']} has type '{e['type']}', which an image "
                                "cannot hold.")
        layer_size = stream.finish()
        layer_hex = sink.hexdigest()
    except BaseException:
        stream.abort()
        raise
    write_all(fd, b"\0" * (-layer_size % BLOCK))
    layer_name = f"blobs/sha256/{layer_hex}"
    os.pwrite(fd, tar_header(layer_name, layer_size, 0o644, epoch), header_at)

    # 2. config, manifest, index and the docker-archive manifest.json
    config = {
        **target,                       # architecture, os (and variant)
        "created": rfc3339(epoch),
        "config": {"Labels": labels, "Volumes": {doc["prefix"]: {}}},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_hex}"]},
        "history": [{"created": rfc3339(epoch),
                     "created_by": f"dappdeps export {doc['distribution']} {doc['version']}",
                     "comment": f"{doc['prefix']}: {files} files"}],
    }
    config_blob = _blob(config)
    config_hex = hashlib.sha256(config_blob).hexdigest()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": f"sha256:{config_hex}",
                   "size": len(config_blob)},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": f"sha256:{layer_hex}",
                    "size": layer_size}],
    }
    manifest_blob = _blob(manifest)
    manifest_hex = hashlib.sha256(manifest_blob).hexdigest()
    ref = f"{repository}:{tag}"
    index = {
        "schemaVersion": 2,
        "mediaType": MEDIA_INDEX,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST, "digest": f"sha256:{manifest_hex}",
            "size": len(manifest_blob),
            "platform": target,
            "annotations": {"io.containerd.image.name": normalized_name(repository, tag),
                            "org.opencontainers.image.ref.name": ref},
        }],
    }
    docker_manifest = [{"Config": f"blobs/sha256/{config_hex}", "RepoTags": [ref],
                        "Layers": [layer_name]}]
    member(f"blobs/sha256/{config_hex}", config_blob)
    member(f"blobs/sha256/{manifest_hex}", manifest_blob)
    member("index.json", _blob(index) + b"\n")
    member("manifest.json", _blob(docker_manifest) + b"\n")
    member("oci-layout", _blob({"imageLayoutVersion": "1.0.0"}) + b"\n")
    outer.append(b"\0" * (2 * BLOCK))
    write_all(fd, b"".join(outer))
    return {
        "format": 1,
        "distribution": doc["distribution"],
        "version": doc["version"],
        "prefix": doc["prefix"],
        "repository": repository,
        "tag": tag,
        "ref": ref,
        "id": f"sha256:{config_hex}",
        "digest": f"sha256:{manifest_hex}",
        "layer": f"sha256:{layer_hex}",
        "layer_size": layer_size,
        "files": files,
        "entries": len(entries),
        "content_size": content,
        "created": rfc3339(epoch),
        "platform": "/".join(target[k] for k in ("os", "architecture", "variant") if k in target),
    }
