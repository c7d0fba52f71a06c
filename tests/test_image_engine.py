"""Exported images in real engines, through the docker SDK, each test once per engine
([podman]: Podman 4.3's Docker API, [docker]: a private dockerd 20.10; both started by
./setup): load + tag, the seed's --volumes-from sequence in busybox and scratch images
(read-only too), when each engine fills a --volume, what a commit keeps, --mount
type=image (works or is refused, as the engine's version says), a Dockerfile RUN
--mount=type=bind,from=..., and the load: task into one engine or several.

Never skipped: an engine that does not answer fails the tests (run ./setup)."""
import io
import json
import os
import sys
import tarfile
import uuid
from pathlib import Path

import pytest

from enginefixture import (ENGINE_NAMES, EPOCH, busybox_files, demo_stage, engine, engine_config,
                           engine_host, ensure_image, toolchain_runtime)
from tasks.ship import engine as eng
from tasks.ship.image import export_image

REPO = "dappdeps-test/fx"
PREFIX = "/.dapp/deps/fx/1.0"
RUN_ID = uuid.uuid4().hex[:8]
# Docker 20.10's own CLI (package docker.io) has BuildKit built in; a newer CLI needs buildx.
DOCKER_BUILDKIT_CLI = "/usr/bin/docker"


@pytest.fixture(scope="module", params=ENGINE_NAMES)
def engine_name(request):
    return request.param


@pytest.fixture(scope="module")
def client(engine_name):
    return engine(engine_name)


@pytest.fixture(scope="module")
def work(tmp_path_factory, engine_name):
    return tmp_path_factory.mktemp(f"engine-{engine_name}")


@pytest.fixture(scope="module")
def base_images(client, work):
    busybox = ensure_image(client, work, "dappdeps-test/busybox", busybox_files(), cmd=["sh"])
    scratch = ensure_image(client, work, "dappdeps-test/scratch", {})
    return {"busybox": busybox, "scratch": scratch}


@pytest.fixture(scope="module")
def fx(client, work):
    """The fixture distribution exported, removed from the engine, then loaded for real."""
    manifest_path = demo_stage(work / "cache")
    result = export_image(manifest_path, None, work / "images/fx-1.0.tar", REPO, "1.0",
                          source_date_epoch=EPOCH)
    for ref in (f"{REPO}:1.0", result["id"]):
        remove_image(client, ref)
    assert eng.load(client, work / "images/fx-1.0.tar", result["ref"], result["id"],
                    result["digest"]) == "loaded"
    yield result
    for ref in (f"{REPO}:1.0", f"{REPO}-runtime:1.0"):
        remove_image(client, ref)


def remove_image(client, ref):
    try:
        client.images.remove(ref, force=True)
    except Exception:                       # noqa: BLE001 - already gone
        pass


@pytest.fixture
def names(client):
    """Unique container names for one test; removed afterwards."""
    made = []

    def name(base):
        made.append(f"dappdeps-test-{base}-{RUN_ID}")
        return made[-1]
    yield name
    for n in made:
        eng.remove_container(client, n)


def test_load_tags_and_is_then_up_to_date(client, fx, work):
    info = client.api.inspect_image(f"{REPO}:1.0")
    assert info["Id"].split(":")[-1] == fx["id"].split(":")[-1]
    assert info["Config"]["Volumes"] == {PREFIX: {}}
    assert info["Config"]["Labels"]["org.opencontainers.image.version"] == "1.0"
    assert info["Config"]["Labels"]["io.dappdeps.component.hello"] == "1.0"
    assert eng.load(client, work / "images/fx-1.0.tar", fx["ref"], fx["id"], fx["digest"]) \
        == "up to date"
    # a second export of the same inputs is the same image for the engine too
    again = export_image(work / "cache/stage/fx.manifest.json", None, work / "again/fx.tar",
                         REPO, "1.0", source_date_epoch=EPOCH)
    assert eng.has_image(client, f"{REPO}:1.0", again["id"], again["digest"])


def test_seed_sequence_busybox_and_scratch(client, fx, base_images, names):
    vc = names("fx")
    eng.create_volume_container(client, f"{REPO}:1.0", PREFIX, vc)
    for kind, image in base_images.items():
        code, out = eng.run(client, image, [f"{PREFIX}/bin/hello", kind], volumes_from=[vc])
        assert (code, out.splitlines()[0]) == (0, f"hello from dappdeps ({kind})"), out
        code, out = eng.run(client, image, [f"{PREFIX}/bin/sh", "-c",
                                            f". {PREFIX}/etc/profile; echo $FIXTURE_PROFILE; "
                                            f"{PREFIX}/bin/busybox ls /.dapp/deps"],
                            volumes_from=[vc])
        assert (code, out.split()) == (0, ["loaded", "fx"]), out
        # the documented usage: the tools read-only (--volumes-from NAME:ro)
        code, out = eng.run(client, image, [f"{PREFIX}/bin/sh", "-c",
                                            f"{PREFIX}/bin/hello ro; touch {PREFIX}/x "
                                            "|| echo write refused"],
                            volumes_from=[f"{vc}:ro"])
        assert code == 0 and "hello from dappdeps (ro)" in out, out
        assert "Read-only file system" in out and "write refused" in out, out
    # the volume container never ran anything and holds no process
    state = client.api.inspect_container(vc)["State"]
    assert not state["Running"]


def test_volume_fill_time_differs_between_engines(client, engine_name, fx, names):
    """`create --volume PREFIX IMAGE no-such-cmd`: Docker fills the volume from the image at
    create, Podman only at the first start (a start that fails on no-such-cmd still fills
    it). Asserted per engine; create_volume_container handles both."""
    import docker.errors
    assert eng.engine_kind(client) == engine_name
    container = client.containers.create(f"{REPO}:1.0", command=[eng.NO_SUCH_CMD],
                                         name=names("probe"), volumes=[PREFIX],
                                         network_mode="none")
    filled_at_create = eng.volume_has_content(client, container.id, PREFIX)
    if engine_name == "docker":
        assert filled_at_create, "dockerd should fill the volume at create"
    else:
        assert not filled_at_create, "Podman should leave the volume empty until a start"
    with pytest.raises(docker.errors.APIError):
        container.start()                   # no-such-cmd: fails on both engines
    container.wait(timeout=60)
    assert eng.volume_has_content(client, container.id, PREFIX)
    vc = eng.create_volume_container(client, f"{REPO}:1.0", PREFIX, names("fx2"))
    assert eng.volume_has_content(client, vc.id, PREFIX)


def layer_entries(client, image_id):
    """{path: type} of every layer of an image, from the engine's `docker save`."""
    data = io.BytesIO(b"".join(client.images.get(image_id).save()))
    out = {}
    with tarfile.open(fileobj=data) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer)) as tar:
                for m in tar:
                    name = m.name[2:] if m.name.startswith("./") else m.name
                    out[name.rstrip("/")] = m.type
    return out


def test_commit_keeps_only_empty_mount_points(client, fx, base_images, names):
    vc = names("fx3")
    eng.create_volume_container(client, f"{REPO}:1.0", PREFIX, vc)
    work = client.containers.create(
        base_images["busybox"],
        ["sh", "-c", f"mkdir -p /app && {PREFIX}/bin/hello build > /app/out"],
        name=names("work"), volumes_from=[vc], network_mode="none")
    work.start()
    assert work.wait(timeout=60)["StatusCode"] == 0
    committed = work.commit(repository="dappdeps-test/committed", tag=RUN_ID)
    try:
        entries = layer_entries(client, committed.id)
        dapp = {p: t for p, t in entries.items() if p.startswith(".dapp")}
        assert dapp == {".dapp": tarfile.DIRTYPE, ".dapp/deps": tarfile.DIRTYPE,
                        ".dapp/deps/fx": tarfile.DIRTYPE, PREFIX[1:]: tarfile.DIRTYPE}
        assert entries["app/out"] == tarfile.REGTYPE
        # a container of the committed image sees an empty mount point
        code, out = eng.run(client, committed.id, ["sh", "-c", f"ls -A {PREFIX} | wc -l; "
                                                   "cat /app/out"])
        assert code == 0 and out.split("\n")[0].strip() == "0", out
        assert "hello from dappdeps (build)" in out
    finally:
        client.images.remove(committed.id, force=True)


def test_mount_type_image(client, fx, base_images):
    """`--mount type=image`: Podman 4.3's API mounts the whole image (no subpath, so the
    prefix lands under the target, not at its own path); Docker >= 28 (API 1.48) and
    Podman >= 5.1 can mount the prefix itself with image-subpath/subpath. dockerd 20.10
    (API 1.41) refuses the mount type: asserted, unless the engine's API says it has it."""
    import docker.errors
    host_config = client.api.create_host_config(network_mode="none")
    # the SDK's docker.types.Mount refuses type "image": pass the API's JSON directly.
    # No "ReadOnly": image mounts are read-only anyway, and Podman 4.3 rejects "ro" for them.
    host_config["Mounts"] = [{"Type": "image", "Source": f"{REPO}:1.0", "Target": "/img"}]
    if not eng.supports_image_mount(client):
        with pytest.raises(docker.errors.APIError) as refused:
            cid = client.api.create_container(base_images["busybox"], ["true"],
                                              host_config=host_config)["Id"]
            client.api.remove_container(cid, force=True)
        assert 'invalid mount config for type "image": mount type unknown' in str(refused.value)
        return
    cid = client.api.create_container(base_images["busybox"],
                                      ["sh", "-c", f"/img{PREFIX}/bin/hello image-mount; "
                                                   f"touch /img{PREFIX}/x || echo read-only"],
                                      host_config=host_config)["Id"]
    try:
        client.api.start(cid)
        assert client.api.wait(cid, timeout=60)["StatusCode"] == 0
        out = client.api.logs(cid).decode()
    finally:
        client.api.remove_container(cid, force=True)
    assert "hello from dappdeps (image-mount)" in out and "read-only" in out


def test_dockerfile_run_mount_from_image(client, engine_name, fx, base_images, tmp_path):
    """RUN --mount=type=bind,from=IMAGE: Podman's API /build takes it; dockerd's API /build
    is the classic builder, which refuses it (asserted), so for Docker the build goes
    through BuildKit with the 20.10 CLI of docker.io (DOCKER_BUILDKIT=1 docker build)."""
    import subprocess
    dockerfile = (f"FROM {base_images['busybox']}\n"
                  f"RUN --mount=type=bind,from={REPO}:1.0,source={PREFIX},target={PREFIX} \\\n"
                  f"    {PREFIX}/bin/hello dockerfile > /built.txt && "
                  f"{PREFIX}/bin/sh -c 'ls {PREFIX}/bin' >> /built.txt\n")
    tag = f"dappdeps-test/built:{RUN_ID}"
    if engine_name == "podman":
        image, _logs = client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag,
                                           network_mode="none", rm=True, pull=False)
    else:
        import docker.errors
        with pytest.raises(docker.errors.BuildError, match="the --mount option requires BuildKit"):
            client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag,
                                network_mode="none", rm=True, pull=False)
        assert Path(DOCKER_BUILDKIT_CLI).is_file(), "the docker.io package's CLI: run ./setup"
        (tmp_path / "Dockerfile").write_text(dockerfile)
        env = {**os.environ, "DOCKER_BUILDKIT": "1", "DOCKER_HOST": engine_host(engine_name)}
        proc = subprocess.run([DOCKER_BUILDKIT_CLI, "build", "--network", "none", "-t", tag,
                               str(tmp_path)], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        image = client.images.get(tag)
    try:
        code, out = eng.run(client, image.id, ["cat", "/built.txt"])
        assert code == 0 and out.startswith("hello from dappdeps (dockerfile)")
        assert "busybox" in out.split()
        entries = layer_entries(client, image.id)
        assert not [p for p in entries if p.startswith(PREFIX[1:] + "/")]
    finally:
        client.images.remove(image.id, force=True)


def test_runtime_image_at_the_same_prefix(client, fx, work, base_images, names):
    include, exclude = toolchain_runtime()
    result = export_image(work / "cache/stage/fx.manifest.json", None,
                          work / "images/fx-runtime-1.0.tar", "dappdeps-test/fx-runtime",
                          "1.0", include=include + ["bin/busybox"],
                          exclude=exclude, source_date_epoch=EPOCH)
    eng.load(client, work / "images/fx-runtime-1.0.tar", result["ref"], result["id"],
             result["digest"])
    vc = names("fx-runtime")
    eng.create_volume_container(client, result["ref"], PREFIX, vc)
    code, out = eng.run(client, base_images["scratch"],
                        [f"{PREFIX}/bin/busybox", "ls", f"{PREFIX}", f"{PREFIX}/lib"],
                        volumes_from=[vc])
    assert code == 0, out
    assert "gconv" in out and "libfx.so.1" in out and "include" not in out and "share" not in out


# ---- the pipeline: fixture packages built by doit, exported, loaded, run -----------
def test_pipeline_demo_distribution(client, engine_name, base_images, tmp_path, names,
                                    monkeypatch):
    """config.yaml `engines:` with one entry: the task names stay load:<image>."""
    from conftest import REPO as REPO_ROOT
    from fixtures import demo_project
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    proj = demo_project(tmp_path)
    cfg = yaml_load(proj.root / "config.yaml")
    cfg["distributions"]["demo"]["image"] = {"name": "dappdeps-test/demo"}
    cfg["engine"] = {"source": "https://example.invalid/dappdeps"}
    cfg["engines"] = engine_config(engine_name)
    write_yaml(proj.root / "config.yaml", cfg)
    dodo = REPO_ROOT / "dodo.py"
    run = run_doit_file(dodo, proj.root / "config.yaml", "load:demo")
    assert "image:demo" in run.ran("image:") and "load:demo" in run.ran("load:"), run.text
    result = json.loads((proj.cache / "images/demo-1.0.json").read_text())
    loaded = eng.read_loaded(proj.cache / "images/demo-1.0.json")
    assert list(loaded) == [engine_name] and loaded[engine_name]["kind"] == engine_name
    assert loaded[engine_name]["id"] == result["id"], loaded
    prefix = result["prefix"]
    vc = names("demo")
    eng.create_volume_container(client, result["ref"], prefix, vc)
    for image in base_images.values():
        code, out = eng.run(client, image, [f"{prefix}/bin/hello"], volumes_from=[vc])
        assert (code, out) == (0, "hello: GREETING\n")
    again = run_doit_file(dodo, proj.root / "config.yaml", "load:demo")
    assert again.ran("image:") == [] and again.ran("load:") == [], again.text
    eng.remove_container(client, vc)
    remove_image(client, result["ref"])


def yaml_load(path):
    import yaml
    return yaml.safe_load(Path(path).read_text())


def write_yaml(path, data):
    import yaml
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))


def run_doit_file(dodo, config, *args):
    import subprocess

    from conftest import REPO as REPO_ROOT
    from conftest import DoitRun, doit_env
    env = doit_env(config)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                      env.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "doit", "-f", str(dodo),
                           *args], env=env, capture_output=True, text=True, timeout=600)
    run = DoitRun(proc)
    assert proc.returncode == 0, run.text[-4000:]
    return run


# ---- the stage module under doit (image:/load: tasks), on a stub assemble task -----
STUB_DODO = '''
import sys
sys.path[:0] = [{repo!r}, {tests!r}]
from tasks.model.project import project
from tasks.stages import creators
globals().update(creators(["image", "load"]))
from enginefixture import demo_stage

project.cache.mkdir(parents=True, exist_ok=True)
DOIT_CONFIG = {{"backend": "sqlite3", "dep_file": str(project.cache / "doit.sqlite3"),
               "verbosity": 2}}


def task_assemble():
    """Stub of the build stage: writes the fixture distribution's stage and manifest."""
    for dist in project.distributions.values():
        target = project.cache / "stage" / f"{{dist.name}}.manifest.json"
        yield {{"name": dist.name, "actions": [lambda: bool(demo_stage(project.cache))],
               "targets": [str(target)], "uptodate": [True]}}
'''


def test_image_and_load_tasks_under_doit(client, engine_name, tmp_path, monkeypatch):
    """The single engine of `engine.host` (the form before `engines:`); DOCKER_HOST wins."""
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    include, exclude = toolchain_runtime()
    from conftest import REPO as REPO_ROOT
    from fixtures import FixtureProject
    proj = FixtureProject(tmp_path / "proj", prefix_root="/.dapp/deps")
    for comp in ("hello", "shell", "libs"):
        proj.add_package(comp, "1.0", {"Makefile": "all:\n"})
    proj.add_distribution("fx", ["hello", "shell", "libs"], version="1.0",
                          image={"name": "dappdeps-test/fx-doit"},
                          images={"fx-doit-runtime": {"name": "dappdeps-test/fx-doit-runtime",
                                                      "include": include,
                                                      "exclude": exclude}})
    config = proj.write_config(engine={"source": "https://example.invalid/dappdeps",
                                       "host": engine_host(engine_name)})
    dodo = tmp_path / "dodo.py"
    dodo.write_text(STUB_DODO.format(repo=str(REPO_ROOT), tests=str(REPO_ROOT / "tests")))
    for ref in ("dappdeps-test/fx-doit:1.0", "dappdeps-test/fx-doit-runtime:1.0"):
        remove_image(client, ref)
    first = run_doit_file(dodo, config, "load")
    assert first.ran("image:") == ["image:fx", "image:fx-doit-runtime"], first.text
    assert first.ran("load:") == ["load:fx", "load:fx-doit-runtime"], first.text
    assert f"dappdeps-test/fx-doit:1.0 loaded in {engine_name} " in first.out
    result = json.loads((proj.cache / "images/fx-1.0.json").read_text())
    assert eng.has_image(client, "dappdeps-test/fx-doit:1.0", result["id"])
    # nothing to do the second time: stamps for image:, the engine's image id for load:
    again = run_doit_file(dodo, config, "load")
    assert again.ran("image:") == [] and again.ran("load:") == [], again.text
    # the engine lost the image: only load: runs
    client.images.remove("dappdeps-test/fx-doit:1.0", force=True)
    third = run_doit_file(dodo, config, "load")
    assert third.ran("image:") == [] and third.ran("load:") == ["load:fx"], third.text
    # no engine: a notice, and success
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    client.images.remove("dappdeps-test/fx-doit:1.0", force=True)
    none = run_doit_file(dodo, config, "load:fx")
    assert "no container engine" in none.out and "fx-1.0.tar" in none.out
    for ref in ("dappdeps-test/fx-doit:1.0", "dappdeps-test/fx-doit-runtime:1.0"):
        remove_image(client, ref)


def test_load_into_several_engines(tmp_path, monkeypatch):
    """`engines:` with both engines: one load:<image> task loads into each, in order, and
    records each engine's kind, version and API version; it runs again when one of them
    lost the image. DOCKER_HOST, when set, replaces the list."""
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    clients = {name: engine(name) for name in ENGINE_NAMES}
    from conftest import REPO as REPO_ROOT
    from fixtures import FixtureProject
    proj = FixtureProject(tmp_path / "proj", prefix_root="/.dapp/deps")
    for comp in ("hello", "shell", "libs"):
        proj.add_package(comp, "1.0", {"Makefile": "all:\n"})
    proj.add_distribution("fx", ["hello", "shell", "libs"], version="1.0",
                          image={"name": "dappdeps-test/fx-multi"})
    config = proj.write_config(engines=engine_config(*ENGINE_NAMES))
    dodo = tmp_path / "dodo.py"
    dodo.write_text(STUB_DODO.format(repo=str(REPO_ROOT), tests=str(REPO_ROOT / "tests")))
    ref = "dappdeps-test/fx-multi:1.0"
    for client in clients.values():
        remove_image(client, ref)
    listed = run_doit_file(dodo, config, "list", "--all")
    assert "load:fx" in listed.out and f"into {', '.join(ENGINE_NAMES)}" in listed.out
    first = run_doit_file(dodo, config, "load")
    assert first.ran("load:") == ["load:fx"], first.text
    for name in ENGINE_NAMES:
        assert f"load:fx: [{name}] {ref} loaded in {name} " in first.out, first.out
    result = json.loads((proj.cache / "images/fx-1.0.json").read_text())
    loaded = eng.read_loaded(proj.cache / "images/fx-1.0.json")
    assert sorted(loaded) == sorted(ENGINE_NAMES)
    for name, client in clients.items():
        assert eng.has_image(client, ref, result["id"], result["digest"])
        assert loaded[name]["kind"] == name and loaded[name]["host"] == engine_host(name)
        assert loaded[name]["version"] == client.version()["Version"]
        assert loaded[name]["api_version"] == client.version()["ApiVersion"]
    assert run_doit_file(dodo, config, "load").ran("load:") == []
    clients["docker"].images.remove(ref, force=True)
    again = run_doit_file(dodo, config, "load")
    assert again.ran("load:") == ["load:fx"], again.text
    assert f"[podman] {ref} up to date" in again.out and f"[docker] {ref} loaded" in again.out
    # DOCKER_HOST wins over engines: one engine, no [name] prefix
    monkeypatch.setenv("DOCKER_HOST", engine_host("podman"))
    clients["podman"].images.remove(ref, force=True)
    only = run_doit_file(dodo, config, "load:fx")
    assert f"load:fx: {ref} loaded in podman " in only.out and "[docker]" not in only.out
    for client in clients.values():
        remove_image(client, ref)
