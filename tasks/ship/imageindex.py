"""Multi-platform images: one OCI image index over an image's per-platform exports.

A distribution built for several platforms is exported once per platform
(image.export_image(..., platform="linux/arm64") -> <name>-<version>-arm64.tar): each tar
stays a docker-archive for `docker load` on that platform and an OCI layout naming its
one manifest with its platform. write_index() lists those manifests in an image index
(application/vnd.oci.image.index.v1+json) and writes the index blob itself as
<name>-<version>.index.json: its sha256 is the index digest, and <stem>.index.digest
holds it. No layer is copied: the blobs stay in the per-platform tars.

Deterministic: descriptors in the order of the platforms given, stable JSON, nothing
else (no time, no host), so the same exports give the same index digest.

push_index() sends every platform's blobs and its manifest (by digest) to a registry,
then the index under the tag: `docker pull --platform` / `podman pull --platform` pick
their platform's manifest from it.
"""
import hashlib
import json
from pathlib import Path

from tasks.core import canonical
from tasks.core.errors import UserError
from tasks.core.files import write_atomic
from tasks.ship import registry
from tasks.ship.ocilayout import read_layout, upload_image


def index_paths(cache, name, version):
    """The index blob and its digest file of a multi-platform image."""
    base = Path(cache) / "images" / f"{name}-{version}"
    return {"index": base.with_name(base.name + ".index.json"),
            "digest": base.with_name(base.name + ".index.digest")}


def image_index(layouts):
    """The index bytes over these Layouts (one per platform, in this order)."""
    platforms = [json.dumps(lay.platform, sort_keys=True) for lay in layouts]
    if not layouts or len(set(platforms)) != len(platforms):
        raise UserError("an image index needs one export per platform, each platform once "
                        f"(got {', '.join(platforms) or 'none'}).")
    refs = {lay.ref for lay in layouts}
    if len(refs) != 1:
        names = ", ".join(sorted(str(r) for r in refs))
        raise UserError(f"the per-platform exports name different images ({names}): an "
                        "index lists the platforms of one image.")
    # stable JSON without the final newline, like the exporter's manifests and configs
    return canonical.dumps({"schemaVersion": 2, "mediaType": registry.MEDIA_INDEX,
                            "manifests": [lay.descriptor for lay in layouts]}).rstrip("\n").encode()


def write_index(tars, index_path):
    """Write the index over the exported tars (one per platform, in order) to
    index_path and <stem>.digest next to it. Returns {"digest", "size", "platforms",
    "manifests"}."""
    layouts = [read_layout(t) for t in tars]
    body = image_index(layouts)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    index_path = Path(index_path)
    write_atomic(index_path, body)
    write_atomic(index_path.with_name(index_path.name[:-len(".json")] + ".digest"),
                 digest + "\n")
    return {"digest": digest, "size": len(body), "ref": layouts[0].ref,
            "platforms": ["/".join(lay.platform[k] for k in ("os", "architecture", "variant")
                                   if k in lay.platform) for lay in layouts],
            "manifests": [lay.digest for lay in layouts]}


def push_index(client, repo, tag, index_path, tars):
    """Upload each platform's image (blobs, then its manifest by digest), then the index
    as repo:tag; read it back. Refuses an index that does not list exactly these
    exports (an export redone since: write the index again). Returns (digest, bytes
    uploaded)."""
    body = Path(index_path).read_bytes()
    listed = [d["digest"] for d in json.loads(body)["manifests"]]
    layouts = [read_layout(t) for t in tars]
    if listed != [lay.digest for lay in layouts]:
        raise UserError(f"{index_path} lists {', '.join(listed)}, but the exports are "
                        f"{', '.join(lay.digest for lay in layouts)}: write the index again.")
    sent = sum(upload_image(client, repo, lay, lay.digest) for lay in layouts)
    digest = client.put_manifest(repo, tag, body, registry.MEDIA_INDEX)
    back = client.get_manifest(repo, tag, accept=(registry.MEDIA_INDEX,))
    if back is None or back[1] != digest:
        raise UserError(f"{repo}:{tag} reads back as {back[1] if back else 'nothing'}, "
                        f"not the index {digest}.")
    return digest, sent
