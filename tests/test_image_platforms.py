"""Multi-platform images (issue 16, point 4), with fixture distributions whose trees hold
a file per platform (no arm64 build needed): each platform's export carries its
architecture; one OCI image index lists them, with a reproducible digest; pushed to a
real registry (Debian's docker-registry on 127.0.0.1), `podman pull --platform` and
Docker's pull pick the right manifest; loading into Podman keeps one name per platform.
A single-platform export's bytes are those of the exporter before platforms existed."""
import hashlib
import json
import os
import re
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest

from enginefixture import EPOCH, busybox_files, busybox_path, engine, ensure_image, make_stage
from foreignbin import busybox_arm64
from registryfixture import RegistryServer, available
from tasks.core.errors import UserError
from tasks.ship import engine as eng
from tasks.ship import registry
from tasks.ship.image import export_image, host_platform, image_paths, platform_fields
from tasks.ship.imageindex import index_paths, push_index, write_index

REPO = "dappdeps-test/fx-platforms"
PREFIX = "/.dapp/deps/fx/1.0"
PLATFORMS = ("linux/amd64", "linux/arm64")
RUN_ID = uuid.uuid4().hex[:8]

# Digests of the text-only amd64 fixture below, written by the exporter of main at
# 2ec81fc, before platforms existed: an amd64 image must keep them.
BEFORE_PLATFORMS = {
    "digest": "sha256:edbadbb87c0183f3ecf4e10f168a64e080c32b165b30ff698ecec07831cd1bc4",
    "id": "sha256:fa8cdc6871b1bfb852aa6521e067c9a1641067d3fc5d1d4e35993ed8675dbec3"}


def platform_stage(cache, arch, busybox=None):
    """The fixture distribution fx 1.0 as built for one architecture: a file naming it,
    one file only that platform has, and (busybox) a static busybox of that architecture."""
    return make_stage(cache / arch, "fx", "1.0", {"hello": {
        "share/platform": f"{arch}\n",
        "bin/hello": ("file", "#!/bin/sh\necho hello\n", 0o755),
        **({"bin/busybox": ("copy", str(busybox), 0o755)} if busybox else {}),
        **({} if arch == "amd64" else {f"share/only-{arch}": f"built for {arch}\n"})}})


def export_all(cache, out, busyboxes):
    """Export every platform of fx to out/ (the image stage's names); [(platform, tar, result)]."""
    exports = []
    for plat in PLATFORMS:
        arch = plat.split("/")[1]
        tar = image_paths(out, "fx", "1.0", plat)["tar"]
        result = export_image(platform_stage(cache, arch, busyboxes[arch]), None, tar, REPO,
                              "1.0", source_date_epoch=EPOCH, platform=plat)
        exports.append((plat, tar, result))
    return exports


def read_tar(path):
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@pytest.fixture(scope="module")
def busyboxes():
    """Static busybox programs: the host's (amd64) and Debian's arm64 one."""
    return {"amd64": busybox_path(), "arm64": busybox_arm64()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, busyboxes):
    root = tmp_path_factory.mktemp("platforms")
    exports = export_all(root / "stage", root / "cache", busyboxes)
    index = write_index([tar for _p, tar, _r in exports],
                        index_paths(root / "cache", "fx", "1.0")["index"])
    return root, exports, index


def test_single_platform_export_is_byte_identical_to_before(tmp_path):
    """No platform (the host's) and an explicit linux/amd64 give the digests of before."""
    assert host_platform() == "linux/amd64"
    manifest = platform_stage(tmp_path / "stage", "amd64")
    plain = export_image(manifest, None, tmp_path / "plain.tar", "dappdeps-test/fx", "1.0",
                         source_date_epoch=EPOCH)
    amd64 = export_image(manifest, None, tmp_path / "amd64.tar", "dappdeps-test/fx", "1.0",
                         source_date_epoch=EPOCH, platform="linux/amd64")
    assert {k: plain[k] for k in BEFORE_PLATFORMS} == BEFORE_PLATFORMS
    assert (tmp_path / "plain.tar").read_bytes() == (tmp_path / "amd64.tar").read_bytes()
    assert plain["platform"] == amd64["platform"] == "linux/amd64"
    assert image_paths(tmp_path, "fx", "1.0")["tar"].name == "fx-1.0.tar"


def test_each_platform_export_carries_its_architecture(exported):
    _root, exports, _index = exported
    for plat, tar, result in exports:
        arch = plat.split("/")[1]
        assert tar.name == ("fx-1.0-arm64.tar" if arch == "arm64" else "fx-1.0-amd64.tar")
        assert result["platform"] == plat
        blobs = read_tar(tar)
        config = json.loads(blobs["blobs/sha256/" + result["id"].split(":")[1]])
        assert (config["architecture"], config["os"]) == (arch, "linux")
        (desc,) = json.loads(blobs["index.json"])["manifests"]
        assert desc["platform"] == {"architecture": arch, "os": "linux"}
        assert desc["annotations"]["org.opencontainers.image.ref.name"] == f"{REPO}:1.0"
        # still a docker-archive, named as on its own platform
        assert json.loads(blobs["manifest.json"])[0]["RepoTags"] == [f"{REPO}:1.0"]
    assert exports[0][2]["digest"] != exports[1][2]["digest"]


def test_index_lists_each_platform_and_its_digest_is_reproducible(exported, busyboxes, tmp_path):
    root, exports, index = exported
    path = index_paths(root / "cache", "fx", "1.0")
    body = path["index"].read_bytes()
    assert index["digest"] == "sha256:" + hashlib.sha256(body).hexdigest()
    assert path["digest"].read_text() == index["digest"] + "\n"
    doc = json.loads(body)
    assert doc["mediaType"] == "application/vnd.oci.image.index.v1+json"
    listed = [(d["platform"]["architecture"], d["digest"], d["mediaType"])
              for d in doc["manifests"]]
    assert listed \
        == [(p.split("/")[1], r["digest"], "application/vnd.oci.image.manifest.v1+json")
            for p, _t, r in exports]
    assert index["platforms"] == list(PLATFORMS)
    # a second export of the same trees (other times, other umask) gives the same index
    for file in (root / "stage").rglob("*"):
        os.utime(file, (1, 1), follow_symlinks=False)
    old = os.umask(0o077)
    try:
        again = export_all(root / "stage", tmp_path / "cache", busyboxes)
    finally:
        os.umask(old)
    second = write_index([t for _p, t, _r in again], tmp_path / "fx-1.0.index.json")
    assert second["digest"] == index["digest"]
    assert (tmp_path / "fx-1.0.index.json").read_bytes() == body


def test_a_variant_is_written_as_given_and_none_is_added(tmp_path):
    assert platform_fields("linux/arm64") == {"architecture": "arm64", "os": "linux"}
    assert platform_fields("linux/arm64/v8") == {"architecture": "arm64", "os": "linux",
                                                 "variant": "v8"}
    assert platform_fields(None) == {"architecture": "amd64", "os": "linux"}
    result = export_image(platform_stage(tmp_path / "stage", "arm64"), None,
                          image_paths(tmp_path, "fx", "1.0", "linux/arm64/v8")["tar"], REPO,
                          "1.0", source_date_epoch=EPOCH, platform="linux/arm64/v8")
    assert result["platform"] == "linux/arm64/v8"
    blobs = read_tar(tmp_path / "images/fx-1.0-arm64-v8.tar")
    config = json.loads(blobs["blobs/sha256/" + result["id"].split(":")[1]])
    assert config["variant"] == "v8"
    (desc,) = json.loads(blobs["index.json"])["manifests"]
    assert desc["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}


def test_index_refuses_a_repeated_platform_or_another_image(exported, tmp_path):
    root, exports, _index = exported
    tars = [t for _p, t, _r in exports]
    with pytest.raises(UserError, match="each platform once"):
        write_index([tars[0], tars[0]], tmp_path / "x.index.json")
    other = export_image(platform_stage(tmp_path / "stage", "arm64"), None, tmp_path / "o.tar",
                         "dappdeps-test/other", "1.0", source_date_epoch=EPOCH,
                         platform="linux/arm64")
    assert other["ref"] == "dappdeps-test/other:1.0"
    with pytest.raises(UserError, match="name different images"):
        write_index([tars[0], tmp_path / "o.tar"], tmp_path / "x.index.json")
    with pytest.raises(UserError, match="os/architecture"):
        export_image(platform_stage(tmp_path / "stage", "arm64"), None, tmp_path / "p.tar",
                     REPO, "1.0", platform="arm64")


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    assert available(), "docker-registry is not installed: run ./setup"
    with RegistryServer(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="module")
def pushed(exported, reg):
    root, exports, index = exported
    client = registry.Registry(reg.url)
    digest, sent = push_index(client, REPO, "1.0",
                              index_paths(root / "cache", "fx", "1.0")["index"],
                              [t for _p, t, _r in exports])
    return f"{reg.url.split('//', 1)[1]}/{REPO}:1.0", digest, sent


def test_push_sends_each_manifest_then_the_index(exported, reg, pushed):
    _root, exports, index = exported
    _name, digest, sent = pushed
    assert digest == index["digest"] and sent > 0
    client = registry.Registry(reg.url)
    body, got = client.get_manifest(REPO, "1.0", accept=(registry.MEDIA_INDEX,))
    assert got == index["digest"]
    assert client.manifest_digest(REPO, "1.0", accept=(registry.MEDIA_INDEX,)) == index["digest"]
    for _p, _t, result in exports:
        assert client.get_manifest(REPO, result["digest"])[1] == result["digest"]
    assert reg.tags(REPO) == ["1.0"]
    # the same again uploads no blob
    assert push_index(client, REPO, "1.0", exported[0] / "cache/images/fx-1.0.index.json",
                      [t for _p, t, _r in exports]) == (digest, 0)


def test_push_refuses_an_index_of_older_exports(exported, reg, tmp_path):
    _root, exports, _index = exported
    stale = tmp_path / "stale.index.json"
    doc = json.loads((exported[0] / "cache/images/fx-1.0.index.json").read_bytes())
    doc["manifests"].reverse()
    stale.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="write the index again"):
        push_index(registry.Registry(reg.url), REPO, "stale", stale, [t for _p, t, _r in exports])


def podman(*args):
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("plat", PLATFORMS)
def test_podman_pull_picks_the_platform(pushed, exported, plat):
    """`podman pull --platform` (the CLI) takes that platform's manifest from the index:
    the image's Architecture and the file only that platform's tree holds."""
    name, _digest, _sent = pushed
    arch = plat.split("/")[1]
    result = {p: r for p, _t, r in exported[1]}[plat]
    done = podman("pull", "-q", "--tls-verify=false", "--platform", plat, name)
    assert done.returncode == 0, done.stderr
    image_id = done.stdout.split()[-1]
    try:
        assert "sha256:" + image_id == result["id"]
        inspect = json.loads(podman("image", "inspect", image_id).stdout)[0]
        assert (inspect["Architecture"], inspect["Os"]) == (arch, "linux")
        assert any(d.endswith("@" + result["digest"]) for d in inspect["RepoDigests"])
        mounted = podman("image", "mount", image_id)
        assert mounted.returncode == 0, mounted.stderr
        try:
            root = mounted.stdout.strip() + PREFIX
            with open(f"{root}/share/platform") as fh:
                assert fh.read() == f"{arch}\n"
            assert os.path.exists(f"{root}/share/only-arm64") == (arch == "arm64")
            kind = subprocess.run(["file", "-b", f"{root}/bin/busybox"], capture_output=True,
                                  text=True).stdout
            assert ("ARM aarch64" if arch == "arm64" else "x86-64") in kind, kind
        finally:
            podman("image", "unmount", image_id)
    finally:
        podman("rmi", "-f", image_id)


@pytest.mark.parametrize("plat", PLATFORMS)
def test_docker_pull_picks_the_platform(pushed, exported, plat):
    """Docker Engine 20.10 (the private dockerd, through the API as `docker pull
    --platform`): the same choice."""
    name, _digest, _sent = pushed
    client = engine("docker")
    result = {p: r for p, _t, r in exported[1]}[plat]
    repository, tag = name.rsplit(":", 1)
    image = client.images.pull(repository, tag=tag, platform=plat)
    try:
        info = client.api.inspect_image(image.id)
        assert info["Id"] == result["id"]
        assert (info["Architecture"], info["Os"]) == (plat.split("/")[1], "linux")
    finally:
        client.images.remove(image.id, force=True)


def test_load_into_podman_per_platform(exported):
    """Both platforms' tarballs into Podman: the host's keeps the plain name, arm64 gets
    <tag>-arm64; a second load finds both up to date."""
    _root, exports, _index = exported
    client = engine("podman")
    ref = f"{REPO}-{RUN_ID}:1.0"            # the tarballs also name REPO:1.0
    try:
        status = eng.load_platforms(client, exports, ref)
        assert status == {"linux/amd64": "loaded", "linux/arm64": "loaded"}
        by_platform = {p: r for p, _t, r in exports}
        amd64 = client.api.inspect_image(ref)
        arm64 = client.api.inspect_image(ref + "-arm64")
        assert (amd64["Id"], amd64["Architecture"]) == (by_platform["linux/amd64"]["id"], "amd64")
        assert (arm64["Id"], arm64["Architecture"]) == (by_platform["linux/arm64"]["id"], "arm64")
        assert eng.load_platforms(client, exports, ref) == \
            {"linux/amd64": "up to date", "linux/arm64": "up to date"}
    finally:
        for name in (ref, ref + "-arm64", f"{REPO}:1.0"):
            try:
                client.images.remove(name, force=True)
            except Exception:               # noqa: BLE001 - already gone
                pass


def test_arm64_image_runs_under_qemu_in_an_arm64_busybox(pushed, busyboxes, tmp_path):
    """The arm64 image pulled from the index, mounted (`--mount type=image`) into an arm64
    busybox image, its aarch64 busybox run with `podman run --platform linux/arm64`: needs
    qemu-user-static registered in binfmt_misc (docs/images.md says how)."""
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    assert entry.exists(), "no qemu-aarch64 in binfmt_misc: see docs/images.md (arm64 here)"
    text = entry.read_text()
    flags = re.search(r"^flags: (\S*)$", text, re.M)
    assert text.startswith("enabled") and flags and "F" in flags.group(1), \
        f"qemu-aarch64 must be enabled with flag F (fix binary) for containers: {text!r}"
    client = engine("podman")
    base = ensure_image(client, tmp_path, "dappdeps-test/busybox",
                        busybox_files(busyboxes["arm64"]), tag="latest-arm64", cmd=["sh"],
                        architecture="arm64")
    name, _digest, _sent = pushed
    pulled = podman("pull", "-q", "--tls-verify=false", "--platform", "linux/arm64", name)
    assert pulled.returncode == 0, pulled.stderr
    image_id = pulled.stdout.split()[-1]
    try:
        done = podman("run", "--rm", "--network", "none", "--platform", "linux/arm64",
                      "--mount", f"type=image,source={image_id},target=/img", base,
                      "sh", "-c",
                      f"uname -m; /img{PREFIX}/bin/busybox cat /img{PREFIX}/share/platform")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["aarch64", "arm64"]
    finally:
        podman("rmi", "-f", image_id)


@pytest.mark.parametrize("engine_name", ("podman", "docker"))
def test_arm64_image_through_volumes_from_in_each_engine(pushed, exported, busyboxes, engine_name,
                                                         tmp_path):
    """The seed's way on arm64, in both engines: the arm64 image pulled from the index
    (Docker's API with platform=linux/arm64; Podman's CLI, as its Docker API pulls over
    TLS only and the test registry speaks plain HTTP), a volume container of it, and an
    arm64 busybox container with --volumes-from NAME:ro runs the aarch64 busybox of the
    prefix (qemu through binfmt_misc; the engines warn that the platform differs and run
    it)."""
    client = engine(engine_name)
    base = ensure_image(client, tmp_path, "dappdeps-test/busybox",
                        busybox_files(busyboxes["arm64"]), tag="latest-arm64", cmd=["sh"],
                        architecture="arm64")
    name, _digest, _sent = pushed
    repository, tag = name.rsplit(":", 1)
    if engine_name == "podman":
        pulled = podman("pull", "-q", "--tls-verify=false", "--platform", "linux/arm64", name)
        assert pulled.returncode == 0, pulled.stderr
        image = client.images.get(pulled.stdout.split()[-1])
    else:
        image = client.images.pull(repository, tag=tag, platform="linux/arm64")
    arm64 = {p: r for p, _t, r in exported[1]}["linux/arm64"]
    volume = f"dappdeps-test-arm64-{RUN_ID}"
    try:
        assert client.api.inspect_image(image.id)["Architecture"] == "arm64"
        assert eng.has_image(client, image.id, arm64["id"], arm64["digest"])
        eng.create_volume_container(client, image.id, PREFIX, volume)
        code, out = eng.run(client, base, ["sh", "-c", f"uname -m; {PREFIX}/bin/busybox cat "
                                                       f"{PREFIX}/share/platform"],
                            volumes_from=[f"{volume}:ro"])
        assert code == 0, out
        assert out.split()[-2:] == ["aarch64", "arm64"]
    finally:
        eng.remove_container(client, volume)
        client.images.remove(image.id, force=True)
