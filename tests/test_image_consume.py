"""Ways to consume an image (issue 16, point 5), with the command-line tools users type,
as docs/images.md ("Ways to consume an image") shows them: Podman 4.3's `--mount
type=image` (the whole image at a target; its `subpath` option is refused), the docker CLI
28 against Docker Engine 20.10 (the engine refuses the mount type), `podman build` with
the Dockerfile `RUN --mount=from=` line offline, and the Kubernetes pod spec: checked
against config.yaml's images, and Podman 4.3's `kube play` refusing image volumes (no
Kubernetes runs here). `--volumes-from` is tests/test_image_engine.py's."""
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from enginefixture import EPOCH, busybox_files, demo_stage, engine, engine_host, ensure_image
from tasks.ship import engine as eng
from tasks.ship.image import export_image

RUN_ID = uuid.uuid4().hex[:8]
IMAGE = f"dappdeps-test/consume-fx:{RUN_ID}"
PREFIX = "/.dapp/deps/fx/1.0"
DOCS = REPO / "docs" / "images.md"


def run(*argv, env=None, cwd=None):
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=300, env=env,
                          cwd=cwd)


@pytest.fixture(scope="module")
def podman_images(tmp_path_factory):
    """The fixture distribution (static hello, busybox as sh) and a busybox base image,
    loaded into Podman; the CLI and the API share its storage."""
    work = tmp_path_factory.mktemp("consume")
    client = engine("podman")
    result = export_image(demo_stage(work / "cache"), None, work / "fx.tar",
                          "dappdeps-test/consume-fx", RUN_ID, source_date_epoch=EPOCH)
    eng.load(client, work / "fx.tar", IMAGE, result["id"], result["digest"])
    busybox = ensure_image(client, work, "dappdeps-test/busybox", busybox_files(), cmd=["sh"])
    yield {"fx": IMAGE, "busybox": busybox}
    run("podman", "rmi", "-f", IMAGE)


def podman_major():
    out = run("podman", "version", "--format", "{{.Client.Version}}").stdout
    return int(out.split(".")[0])


def test_podman_cli_mount_type_image(podman_images):
    """Podman 4.3: the whole image at a target, read-only; a static program runs from it."""
    done = run("podman", "run", "--rm", "--network", "none", "--mount",
               f"type=image,source={podman_images['fx']},target=/img", podman_images["busybox"],
               "sh", "-c", f"/img{PREFIX}/bin/hello image-mount; touch /img{PREFIX}/x")
    assert "hello from dappdeps (image-mount)" in done.stdout
    assert done.returncode != 0 and "Read-only file system" in done.stderr


def test_podman_cli_mount_type_image_subpath_needs_podman_5(podman_images):
    """The prefix at its own path needs `subpath` (Podman >= 5.1): 4.3 refuses the option."""
    assert podman_major() < 5, "Podman 5 here: make this test run the subpath form"
    done = run("podman", "run", "--rm", "--network", "none", "--mount",
               f"type=image,source={podman_images['fx']},target={PREFIX},subpath={PREFIX}",
               podman_images["busybox"], f"{PREFIX}/bin/hello")
    assert done.returncode == 125 and "subpath: invalid mount option" in done.stderr


def test_docker_cli_28_mount_type_image_is_refused_by_engine_20_10(tmp_path):
    """The docker CLI 28 sends the mount; Docker Engine 20.10 (API 1.41) refuses the type."""
    client = engine("docker")
    busybox = ensure_image(client, tmp_path, "dappdeps-test/busybox", busybox_files(), cmd=["sh"])
    assert not eng.api_at_least(client, eng.IMAGE_MOUNT_API), \
        "this dockerd has API 1.48: make this test run the image mount"
    docker = shutil.which("docker")
    assert docker, "no docker CLI on PATH"
    env = {**os.environ, "DOCKER_HOST": engine_host("docker")}
    done = run(docker, "run", "--rm", "--network", "none", "--mount",
               f"type=image,source={IMAGE},target={PREFIX},image-subpath={PREFIX[1:]}",
               busybox, "true", env=env)
    assert done.returncode == 125
    assert 'invalid mount config for type "image": mount type unknown' in done.stderr


def dockerfile_example():
    """The Dockerfile of docs/images.md's RUN --mount=from= example."""
    text = DOCS.read_text()
    block = re.search(r"```dockerfile\n(.*?)```", text, re.S)
    assert block, "docs/images.md has no dockerfile block"
    return block.group(1)


def test_podman_build_run_mount_from_offline(podman_images, tmp_path):
    """The documented RUN --mount=from= form (type bind by default) with `podman build
    --pull=never --network none`: the step runs the mounted program, and the built image
    holds nothing below the prefix."""
    doc = dockerfile_example()
    assert re.search(r"--mount=from=dappdeps/base:0\.1\.0,src=/\.dapp/deps/base/0\.1\.0,"
                     r"target=/\.dapp/deps/base/0\.1\.0", doc)
    # the same line for the fixture distribution, in the local busybox image
    (tmp_path / "Containerfile").write_text(
        f"FROM {podman_images['busybox']}\n"
        f"RUN --mount=from={podman_images['fx']},src={PREFIX},target={PREFIX} \\\n"
        f"    {PREFIX}/bin/hello build > /built.txt\n")
    tag = f"dappdeps-test/consume-built:{RUN_ID}"
    done = run("podman", "build", "--pull=never", "--network", "none", "-t", tag, str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    try:
        out = run("podman", "run", "--rm", "--network", "none", tag, "cat", "/built.txt").stdout
        assert out.startswith("hello from dappdeps (build)")
        mounted = run("podman", "image", "mount", tag)
        assert mounted.returncode == 0, mounted.stderr
        try:
            below = Path(mounted.stdout.strip() + PREFIX)
            assert not below.exists() or not any(below.iterdir())
        finally:
            run("podman", "image", "unmount", tag)
    finally:
        run("podman", "rmi", "-f", tag)


def pod_spec():
    """The Kubernetes pod spec of docs/images.md."""
    block = re.search(r"```yaml\n(apiVersion: v1\nkind: Pod\n.*?)```", DOCS.read_text(), re.S)
    assert block, "docs/images.md has no pod spec"
    return yaml.safe_load(block.group(1))


def test_kubernetes_pod_spec_mounts_each_image_at_its_prefix():
    """Not run (no Kubernetes here): the spec's shape, and that each image volume names an
    image config.yaml makes and is mounted read-only at that distribution's prefix, with the
    prefix as subPath (the layer holds it below the image's root)."""
    from tasks.model.config import load_config
    cfg = load_config(REPO)
    made = {f"{spec['repository']}:{dist.version}": dist.prefix
            for dist in cfg.distributions.values() for spec in dist.images.values()}
    spec = pod_spec()
    volumes = {v["name"]: v["image"] for v in spec["spec"]["volumes"]}
    assert volumes and all(set(v) == {"reference", "pullPolicy"} for v in volumes.values())
    (container,) = spec["spec"]["containers"]
    mounts = container["volumeMounts"]
    assert sorted(m["name"] for m in mounts) == sorted(volumes)
    for mount in mounts:
        prefix = made[volumes[mount["name"]]["reference"]]
        assert mount == {"name": mount["name"], "mountPath": prefix,
                         "subPath": prefix.lstrip("/"), "readOnly": True}
    assert container["command"][0].startswith(made["dappdeps/base:0.1.0"] + "/bin/")


def test_podman_kube_play_refuses_image_volumes(podman_images, tmp_path):
    """Podman 4.3's `kube play` knows HostPath, ConfigMap, EmptyDir and
    PersistentVolumeClaim volumes only: the documented spec cannot be tried here."""
    assert podman_major() < 5, "Podman 5 here: try the pod spec with `podman kube play`"
    spec = pod_spec()
    spec["metadata"]["name"] = f"dappdeps-test-{RUN_ID}"
    for volume in spec["spec"]["volumes"]:
        volume["image"]["reference"] = podman_images["fx"]
    (tmp_path / "pod.yaml").write_text(json.dumps(spec))
    done = run("podman", "kube", "play", "--network", "none", str(tmp_path / "pod.yaml"))
    try:
        assert done.returncode != 0
        assert "HostPath, ConfigMap, EmptyDir, and PersistentVolumeClaim are currently the " \
               "only supported VolumeSource" in done.stderr
    finally:
        run("podman", "kube", "down", str(tmp_path / "pod.yaml"))
