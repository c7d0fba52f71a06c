"""The stages of a distribution built for linux/amd64 and linux/arm64 (issue 16), end to
end with real tools: a fixture distribution whose "build" installs prebuilt static
busybox programs (the host's for amd64, Debian's busybox-static:arm64 for the arm64
build, picked by the cross environment's HOST_TRIPLET: there is no cross toolchain yet),
run through image: (each platform's export and the index), legal: (per platform),
push: (the index to a local docker-registry), `podman pull --platform` of each platform
(`file` on its busybox), load: (per platform, both engines) and check-images:bb@arm64
(arm64 busybox and scratch images, --platform linux/arm64, qemu through binfmt_misc).

And the other way: a distribution built for linux/amd64 only gets the task list, the
files and the bytes the code before this wiring gave (main at BEFORE, run from a
`git archive` of it)."""
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile

import pytest
import yaml

from conftest import REPO, doit_env, run_doit
from enginefixture import ENGINE_NAMES, busybox_files, busybox_path, engine, engine_config, \
    ensure_image
from fixtures import FixtureProject
from foreignbin import busybox_arm64
from registryfixture import RegistryServer, available
from tasks.ship import registry

# main before the platforms reached the stages: what an amd64-only project must still give
BEFORE = "9504be76fec6c99d0ee6789f280fb4c43ae3b1ff"
REPOSITORY = "dappdeps-test/bb-platforms"
MAKEFILE = (
    "all:\n"
    "install:\n"
    "\tmkdir -p $(PREFIX)/bin $(PREFIX)/share\n"
    # HOST_TRIPLET: set by a foreign platform's build only (tasks/model/cross.py)
    "\tinstall -m 755 $(if $(HOST_TRIPLET),arm64/busybox-arm64,amd64/busybox-amd64) "
    "$(PREFIX)/bin/busybox\n"
    "\techo $(if $(HOST_TRIPLET),aarch64,x86_64) > $(PREFIX)/share/machine\n")
# the machine the program reports is the one it was installed for
SMOKE = ["$PREFIX/bin/busybox sh -c 'test \"$($PREFIX/bin/busybox uname -m)\" = "
         "\"$($PREFIX/bin/busybox cat $PREFIX/share/machine)\"'",
         "$PREFIX/bin/busybox true"]
ARM64 = "linux/arm64"


def _project(root, platforms, **config):
    """bb: one component installing the busybox of its platform; xtc: the stand-in cross
    toolchain (built for amd64, its one component does nothing)."""
    proj = FixtureProject(root)
    proj.add_package("xgcc", "1.0", {"Makefile": "all:\ninstall:\n"})
    proj.add_package("busybox", "1.0", {"Makefile": MAKEFILE,
                                        "COPYING": "Permission is hereby granted\n"},
                     smoke=SMOKE, license_files=["COPYING"])
    recipe = proj.recipes["busybox"]
    for arch, binary in (("amd64", busybox_path()), ("arm64", busybox_arm64())):
        name = f"busybox-{arch}"
        shutil.copyfile(binary, proj.served / name)
        recipe["sources"].append({"file": name, "dest": arch, "extract": False,
                                  "sha256": hashlib.sha256((proj.served / name).read_bytes()
                                                           ).hexdigest(),
                                  "urls": [f"{proj.base_url}/{name}"]})
    proj.write_recipe(recipe)
    if ARM64 in platforms:
        proj.add_distribution("xtc", ["xgcc"], platforms=["linux/amd64"], default=False)
        config["cross"] = {ARM64: "xtc"}
    proj.add_distribution("bb", ["busybox"], platforms=platforms,
                          image={"name": REPOSITORY})
    return proj, proj.write_config(**config)


def _tags(run):
    return {line.split()[0] for line in run.out.splitlines() if line.strip()}


# ---- the multi-platform pipeline ----------------------------------------------------
@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    assert available(), "docker-registry is not installed: run ./setup"
    with RegistryServer(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="module")
def clients():
    return {name: engine(name) for name in ENGINE_NAMES}


@pytest.fixture(scope="module")
def bases(clients, tmp_path_factory):
    """amd64 busybox; arm64 busybox and scratch (configs saying arm64), in every engine."""
    work = tmp_path_factory.mktemp("bases")
    for client in clients.values():
        amd64 = [ensure_image(client, work, "dappdeps-test/busybox", busybox_files(),
                              cmd=["sh"])]
        arm64 = [ensure_image(client, work, "dappdeps-test/busybox",
                              busybox_files(busybox_arm64()), tag="latest-arm64", cmd=["sh"],
                              architecture="arm64"),
                 ensure_image(client, work, "dappdeps-test/scratch", {}, tag="latest-arm64",
                              architecture="arm64")]
    return amd64, arm64


@pytest.fixture(scope="module", autouse=True)
def no_docker_host():
    """config.yaml `engines:` chooses the engines here; DOCKER_HOST would win over it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DOCKER_HOST", raising=False)
        yield


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, reg, bases, clients):
    """The project, its config, and the run of push:bb legal:bb (which builds, assembles
    and exports both platforms first). The engines hold no image of an earlier run."""
    for client in clients.values():
        for ref in (f"{REPOSITORY}:1.0", f"{REPOSITORY}:1.0-arm64"):
            try:
                client.images.remove(ref, force=True)
            except Exception:               # noqa: BLE001 - not there
                pass
    amd64, arm64 = bases
    proj, config = _project(tmp_path_factory.mktemp("multi"), ["linux/amd64", ARM64],
                            image_registry={"url": reg.url, "repository": "dappdeps-test"},
                            engines=engine_config(*ENGINE_NAMES),
                            checks={"images": amd64, "platform_images": {ARM64: arm64}})
    run = run_doit(config, "push:bb", "legal:bb", check=True)
    return proj, config, run


def test_doit_list_shows_each_platform(pipeline):
    _proj, config, _run = pipeline
    listed = run_doit(config, "list", "--all", check=True)
    names = _tags(listed)
    assert {"build:bb/busybox", "build:bb/busybox@arm64", "assemble:bb@arm64", "check:bb@arm64",
            "image:bb", "legal:bb", "load:bb", "push:bb", "check-images:bb",
            "check-images:bb@arm64"} <= names
    assert "image:bb@arm64" not in names       # one image task: every platform and the index
    docs = {line.split()[0]: line for line in listed.out.splitlines() if line.strip()}
    assert docs["image:bb"].rstrip().endswith("for linux/amd64, linux/arm64")
    assert docs["push:bb"].rstrip().endswith("(index of linux/amd64, linux/arm64)")
    assert "--platform linux/arm64" in docs["check-images:bb@arm64"]
    assert "checks.platform_images.linux/arm64" in docs["check-images:bb@arm64"]


def test_image_exports_each_platform_and_the_index(pipeline):
    proj, _config, run = pipeline
    images = proj.cache / "images"
    native = json.loads((images / "bb-1.0.json").read_text())
    arm64 = json.loads((images / "bb-1.0-arm64.json").read_text())
    assert (native["platform"], arm64["platform"]) == ("linux/amd64", ARM64)
    assert native["ref"] == arm64["ref"] == f"{REPOSITORY}:1.0"
    index = json.loads((images / "bb-1.0.index.json").read_bytes())
    assert [(d["platform"]["architecture"], d["digest"]) for d in index["manifests"]] == \
        [("amd64", native["digest"]), ("arm64", arm64["digest"])]
    digest = (images / "bb-1.0.index.digest").read_text().strip()
    assert f"image:bb: index {digest} of linux/amd64, linux/arm64" in run.out
    assert "image:bb [linux/arm64]: " in run.out
    stamp = json.loads((images / "bb-1.0.stamp").read_text())
    assert sorted(stamp["inputs"]["platforms"]) == ["linux/amd64", ARM64]
    assert stamp["index"] == digest
    # the arm64 export is stripped by the host's aarch64 strip (Debian's busybox is
    # already stripped: nothing gets smaller), the amd64 one by the host's strip
    from tasks.ship.strip import strip_version
    arm64_strip = shutil.which("aarch64-linux-gnu-strip")
    assert arm64_strip, "aarch64-linux-gnu-strip is missing: ./setup installs it"
    assert arm64["stripped"]["tool"] == strip_version(arm64_strip) != ""
    from tasks.model.config import load_config
    from tasks.stages.image import strip_tool
    cfg = load_config(proj.root)
    assert strip_tool(cfg.for_platform(ARM64), cfg.distributions["bb"]) == \
        (arm64_strip, (64, True, "EM_AARCH64"))
    assert strip_tool(cfg, cfg.distributions["bb"]) is None     # the host's strip
    assert native["stripped"]["tool"] == strip_version()
    assert arm64["stripped"]["files"] == 0 and arm64["stripped"]["failed"] == []
    assert set(stamp["inputs"]["strip_tools"]) == {"linux/amd64", ARM64}
    # reclaim keeps the foreign export of the current version, not one of another
    from tasks.build.leftovers import superseded_images
    from tasks.model.config import load_config
    (images / "bb-0.9-arm64.tar").write_bytes(b"")
    try:
        assert [p.name for p, _why, _lock in superseded_images(load_config(proj.root))] == \
            ["bb-0.9-arm64.tar"]
    finally:
        (images / "bb-0.9-arm64.tar").unlink()
    # each tar holds the busybox of its platform
    for name, machine in (("bb-1.0.tar", "x86-64"), ("bb-1.0-arm64.tar", "ARM aarch64")):
        with tarfile.open(images / name) as outer:
            layer = max(outer.getmembers(), key=lambda m: m.size)
            with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                data = inner.extractfile(f"{proj.prefix_root[1:]}/bb/1.0/bin/busybox").read()
        kind = subprocess.run(["file", "-b", "-"], input=data, capture_output=True).stdout
        assert machine.encode() in kind, kind


def test_legal_files_per_platform(pipeline):
    proj, _config, run = pipeline
    images = proj.cache / "images"
    for stem, platform in (("bb-1.0", "linux/amd64"), ("bb-1.0-arm64", ARM64)):
        result = json.loads((images / f"{stem}.json").read_text())
        sbom = json.loads((images / f"{stem}.cdx.json").read_text())
        top = sbom["metadata"]["component"]
        assert result["digest"] in json.dumps(top)
        # which export of the index it describes
        assert {"name": "dappdeps:platform", "value": platform} in top["properties"]
        assert f"arch={platform.split('/')[1]}" in top["purl"]
        assert (images / f"{stem}.legal/licenses/busybox-1.0/COPYING").is_file()
    assert "legal:bb: 1 components" in run.out
    assert "legal:bb [linux/arm64]: 1 components" in run.out


def test_push_sends_the_index_and_podman_pulls_each_platform(pipeline, reg):
    proj, _config, run = pipeline
    images = proj.cache / "images"
    digest = (images / "bb-1.0.index.digest").read_text().strip()
    host = reg.url.split("//", 1)[1]
    pushed = "dappdeps-test/bb"             # image_registry.repository + the image's name
    assert f"push:bb: {reg.url}/{pushed}:1.0@{digest} (index of linux/amd64, " \
           "linux/arm64;" in run.out, run.out
    client = registry.Registry(reg.url)
    assert client.manifest_digest(pushed, "1.0", accept=(registry.MEDIA_INDEX,)) == digest
    for plat, stem, machine in (("linux/amd64", "bb-1.0", "x86-64"),
                                (ARM64, "bb-1.0-arm64", "ARM aarch64")):
        result = json.loads((images / f"{stem}.json").read_text())
        pulled = subprocess.run(["podman", "pull", "-q", "--tls-verify=false", "--platform",
                                 plat, f"{host}/{pushed}:1.0"], capture_output=True,
                                text=True, timeout=300)
        assert pulled.returncode == 0, pulled.stderr
        image_id = pulled.stdout.split()[-1]
        try:
            assert "sha256:" + image_id == result["id"]
            mounted = subprocess.run(["podman", "image", "mount", image_id],
                                     capture_output=True, text=True)
            assert mounted.returncode == 0, mounted.stderr
            try:
                busybox = f"{mounted.stdout.strip()}{proj.prefix_root}/bb/1.0/bin/busybox"
                kind = subprocess.run(["file", "-b", busybox], capture_output=True,
                                      text=True).stdout
                assert machine in kind, kind
            finally:
                subprocess.run(["podman", "image", "unmount", image_id], capture_output=True)
        finally:
            subprocess.run(["podman", "rmi", "-f", image_id], capture_output=True)


def test_check_images_runs_the_arm64_images_under_qemu(pipeline, bases, clients):
    proj, config, _run = pipeline
    amd64, arm64 = bases
    run = run_doit(config, "check-images:bb@arm64", "check-images:bb", timeout=900)
    assert run.returncode == 0, run.text[-4000:]
    assert run.ran("load:") == ["load:bb"]
    assert run.ran("check-images:") == ["check-images:bb", "check-images:bb@arm64"]
    # load: each platform under its name, in each engine
    for name in ENGINE_NAMES:
        assert f"load:bb: [{name}] {REPOSITORY}:1.0-arm64 loaded" in run.out, run.out
        info = clients[name].api.inspect_image(f"{REPOSITORY}:1.0-arm64")
        assert info["Architecture"] == "arm64"
        assert clients[name].api.inspect_image(f"{REPOSITORY}:1.0")["Architecture"] == "amd64"
    for stem in ("bb-1.0", "bb-1.0-arm64"):
        loaded = json.loads((proj.cache / f"images/{stem}.engines.json").read_text())
        assert sorted(loaded) == sorted(ENGINE_NAMES)
    report = json.loads((proj.cache / "checks/bb@arm64.images.json").read_text())
    assert report["platform"] == ARM64
    assert report["mounted"] == [f"{REPOSITORY}:1.0-arm64"]
    for found in report["engines"]:
        assert sorted(found["images"]) == sorted(arm64)
        assert all(r["status"] == 0 for results in found["images"].values() for r in results)
        for ref in arm64:
            assert f"in {ref}: 2/2 smoke tests passed" in run.out
    native = json.loads((proj.cache / "checks/bb.images.json").read_text())
    assert "platform" not in native and native["mounted"] == [f"{REPOSITORY}:1.0"]
    assert all(r["status"] == 0 for found in native["engines"]
               for results in found["images"].values() for r in results)
    # the arm64 smoke test compares `uname -m` with the machine the build installed for:
    # it passed, so the containers ran aarch64 code
    assert (proj.cache / "stage/bb@arm64.manifest.json").is_file()
    for client in clients.values():
        assert not client.containers.list(all=True, filters={"name": "dappdeps-check-bb"})


def test_second_run_finds_everything_up_to_date(pipeline):
    _proj, config, _run = pipeline
    again = run_doit(config, "push:bb", "legal:bb", "check-images:bb@arm64",
                     "check-images:bb", timeout=900)
    assert again.returncode == 0, again.text[-3000:]
    assert [t for t in again.ran("") if t != "check-host"] == [], again.out


def test_arm64_containers_are_created_with_the_platform(pipeline, bases):
    """--platform linux/arm64 reaches the engine: Docker refuses an amd64 image listed as
    an arm64 base image (Podman 4.3 takes the platform and runs it anyway)."""
    proj, config, _run = pipeline
    amd64, _arm64 = bases
    data = yaml.safe_load(config.read_text())
    data["engines"] = engine_config("docker")
    data["checks"]["platform_images"] = {ARM64: amd64}
    wrong = config.with_name("config-wrong-base.yaml")
    wrong.write_text(yaml.safe_dump(data))
    run = run_doit(wrong, "check-images:bb@arm64", timeout=900)
    assert run.returncode != 0
    assert "check-images:bb@arm64: 2 smoke test(s) failed" in run.text, run.text[-3000:]
    log = (proj.cache / "checks/bb@arm64.images.log").read_text()
    assert log.startswith("# check-images:bb@arm64 ")
    assert "does not match the specified platform: wanted linux/arm64, actual: linux/amd64" \
        in log, log


# ---- checks.platform_images, checked when loading -------------------------------------
@pytest.mark.parametrize("images, words", [
    ({"linux/amd64": ["x"]}, "linux/amd64 is this machine's platform: its base images are "
                             "checks.images"),
    ({"linux/arm64": ["x"]}, "no distribution is built for linux/arm64"),
    ({"linux/sparc": ["x"]}, "'linux/sparc' is not a platform dappdeps knows"),
    ({"linux/arm64": "busybox"}, "expected a list of base images of that platform"),
])
def test_platform_images_are_checked_when_loading(tmp_path, images, words):
    _proj, config = _project(tmp_path, ["linux/amd64"], checks={"platform_images": images})
    run = run_doit(config, "list")
    assert run.returncode == 2, run.text
    assert "checks.platform_images" in run.err and words in run.err, run.err


# ---- linux/amd64 only: as before ------------------------------------------------------
def _before_tree(tmp_path):
    """main at BEFORE, from git (no checkout of this worktree is touched)."""
    tree = tmp_path / "before"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE], capture_output=True)
    assert archive.returncode == 0, \
        f"commit {BEFORE} (main before this wiring) is not in this clone: {archive.stderr!r}"
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def _doit(dodo, config, *args):
    done = subprocess.run([sys.executable, "-m", "doit", "-f", str(dodo), *args],
                          env=doit_env(config), capture_output=True, text=True, timeout=900,
                          cwd=dodo.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_amd64_only_gives_the_tasks_files_and_bytes_of_before(tmp_path):
    """Same `doit list --all`, and image:bb legal:bb give the same files with the same
    bytes (image tar, digests, SBOM, license folder; the stamps but for the digests of
    the code that wrote them) and the same component keys,
    whether run by main at BEFORE or by this code, each in its own cache."""
    proj, config = _project(tmp_path / "proj", ["linux/amd64"],
                            checks={"images": ["dappdeps-test/busybox:latest"]})
    data = yaml.safe_load(config.read_text())
    configs = {}
    for who in ("before", "now"):
        configs[who] = config.with_name(f"config-{who}.yaml")
        configs[who].write_text(yaml.safe_dump({**data, "cache_dir": f"cache-{who}"}))
    dodos = {"before": _before_tree(tmp_path) / "dodo.py", "now": REPO / "dodo.py"}
    # the tree of BEFORE runs its own code: it knows no checks.platform_images
    probe = config.with_name("config-probe.yaml")
    probe.write_text(yaml.safe_dump({**data, "checks": {"platform_images": {}}}))
    old = subprocess.run([sys.executable, "-m", "doit", "-f", str(dodos["before"]), "list"],
                         env=doit_env(probe), capture_output=True, text=True,
                         cwd=dodos["before"].parent)
    assert old.returncode == 2 and "unknown key 'platform_images'" in old.stderr, old.stderr
    _doit(dodos["now"], probe, "list")
    listed = {who: _doit(dodos[who], configs[who], "list", "--all") for who in dodos}
    assert listed["now"] == listed["before"]
    assert "check-images:bb " in listed["now"] and "@arm64" not in listed["now"]
    for who in dodos:
        _doit(dodos[who], configs[who], "image:bb", "legal:bb")

    def files(who, folder):
        root = proj.root / f"cache-{who}" / folder
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file()}
    before, now = files("before", "images"), files("now", "images")
    assert sorted(now) == sorted(before)
    assert {"bb-1.0.tar", "bb-1.0.digest", "bb-1.0.cdx.json", "bb-1.0.stamp",
            "bb-1.0.legal.stamp"} <= set(now)
    # the stamps name the code that wrote the files: only those digests may differ
    assert [n for n in now if now[n] != before[n] and not n.endswith(".stamp")] == []
    for name in ("bb-1.0.stamp", "bb-1.0.legal.stamp"):
        stamps = [json.loads(files(who, "images")[name]) for who in ("before", "now")]
        for stamp in stamps:
            stamp.pop("key")                    # the digest of the inputs below
            stamp["inputs"].pop("exporter", None)
            stamp["inputs"].pop("legal", None)
        assert stamps[0] == stamps[1], name
    # the component's key and content digest (its key.json also holds the build's time)
    keys = {who: json.loads(files(who, "stage/bb/busybox")["key.json"]) for who in dodos}
    assert [(k["key"], k["content"]) for k in keys.values()] == \
        [(keys["before"]["key"], keys["before"]["content"])] * 2
