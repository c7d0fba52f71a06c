"""The OCI layout inside an exported image tar (tasks/ship/image.py), read and uploaded.

read_layout() finds the one manifest the tar's index.json names, its platform and where
each blob sits in the tar; upload_image() sends the config and layer blobs (streamed
from the tar, skipped when the registry has them) and then the manifest, byte for byte,
so the registry's digest is the exported one. push:<image> uses it for a single-platform
image; imageindex.push_index() for each platform of a multi-platform one.
"""
import json
import tarfile

from tasks.core.errors import UserError
from tasks.ship import registry


class Layout:
    """manifest (bytes), digest, platform ({"architecture", "os"}), ref (the
    org.opencontainers.image.ref.name annotation) and blobs {digest: (offset, size)}."""

    def __init__(self, path, manifest, digest, platform, ref, blobs):
        self.path, self.manifest, self.digest = path, manifest, digest
        self.platform, self.ref, self.blobs = platform, ref, blobs

    @property
    def descriptor(self):
        """The manifest's descriptor, as an image index lists it."""
        return {"mediaType": registry.MEDIA_MANIFEST, "digest": self.digest,
                "size": len(self.manifest), "platform": self.platform}


def read_layout(tar_path):
    """The Layout of an exported image tar (its index.json must name one manifest)."""
    with tarfile.open(tar_path) as tar:
        members = {m.name: m for m in tar.getmembers() if m.isfile()}
        index = json.loads(tar.extractfile(members["index.json"]).read())
        (desc,) = index["manifests"]
        blobs = {"sha256:" + n.rsplit("/", 1)[1]: (m.offset_data, m.size)
                 for n, m in members.items() if n.startswith("blobs/sha256/")}
        body = tar.extractfile(members["blobs/sha256/" + desc["digest"].split(":", 1)[1]]).read()
    return Layout(tar_path, body, desc["digest"], desc.get("platform"),
                  (desc.get("annotations") or {}).get("org.opencontainers.image.ref.name"), blobs)


class _Member:
    """A tar member's bytes as a file object for requests (streamed, sized)."""

    def __init__(self, path, offset, size):
        self.fh = open(path, "rb")
        self.fh.seek(offset)
        self.left = size

    def __len__(self):
        return self.left

    def read(self, n=-1):
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.fh.read(n)
        self.left -= len(data)
        return data

    def __iter__(self):
        while True:
            data = self.read(1 << 20)
            if not data:
                return
            yield data

    def close(self):
        self.fh.close()


def upload_image(client, repo, layout, ref):
    """Upload a Layout's blobs, then PUT its manifest as repo:ref (a tag, or its own
    digest for a manifest that an index will name). Returns the bytes uploaded."""
    doc = json.loads(layout.manifest)
    sent = 0
    for desc in [doc["config"]] + doc["layers"]:
        offset, size = layout.blobs[desc["digest"]]
        if size != desc["size"]:
            raise UserError(f"{layout.path}: blob {desc['digest']} is {size} bytes, its "
                            f"descriptor says {desc['size']}.")
        if client.upload_blob(repo, desc["digest"], size,
                              lambda o=offset, s=size: _Member(layout.path, o, s)):
            sent += size
    pushed = client.put_manifest(repo, ref, layout.manifest,
                                 doc.get("mediaType", registry.MEDIA_MANIFEST))
    if pushed != layout.digest:
        raise UserError(f"{repo}:{ref} was stored as {pushed}, not {layout.digest}.")
    return sent
