"""check-images:<dist>: a fixture distribution built by the real pipeline, exported,
loaded into the engines (Podman's API and a private dockerd, both from ./setup) and
smoke-tested inside busybox and scratch containers with its image mounted
--volumes-from NAME:ro, the seed's way: in each engine alone ([podman], [docker]) and
in both at once (config.yaml `engines:` with two entries)."""
import json
import textwrap

import pytest

from conftest import run_doit
from enginefixture import ENGINE_NAMES, busybox_files, engine, engine_config, ensure_image
from fixtures import HELLO, LIBGREET, FixtureProject

# The chain's bin/bash runs the smoke commands. The fixture's "bash" is Debian's static
# busybox started as sh: real, tiny, and it runs in scratch.
SHELL = {
    "bash.c": textwrap.dedent(r"""
        #include <stdio.h>
        #include <string.h>
        #include <unistd.h>
        int main(int argc, char **argv) {
            char self[4096], box[4096];
            ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
            if (n < 0) { perror("readlink"); return 127; }
            self[n] = 0;
            *strrchr(self, '/') = 0;
            snprintf(box, sizeof box, "%s/busybox", self);
            argv[0] = "sh";
            execv(box, argv);
            perror(box);
            return 127;
        }
        """),
    "Makefile": textwrap.dedent("""\
        all: bash
        bash: bash.c
        \t$(CC) -static -o $@ bash.c
        install:
        \tmkdir -p $(PREFIX)/bin
        \tcp bash $(PREFIX)/bin/bash
        \tcp /bin/busybox $(PREFIX)/bin/busybox
        """),
}

SMOKE = ["hello | grep -q GREETING",
         # the hostile environment of check:<dist> reaches the container
         'test "$LD_LIBRARY_PATH" = /nonexistent:/lib',
         'case "$PATH" in $PREFIX/bin:*) ;; *) exit 1;; esac']


@pytest.fixture(scope="module")
def clients():
    return {name: engine(name) for name in ENGINE_NAMES}


@pytest.fixture(scope="module")
def bases(clients, tmp_path_factory):
    """The same busybox and scratch images (same ids) in every engine."""
    work = tmp_path_factory.mktemp("bases")
    for client in clients.values():
        refs = [ensure_image(client, work, "dappdeps-test/busybox", busybox_files(), cmd=["sh"]),
                ensure_image(client, work, "dappdeps-test/scratch", {})]
    return refs


@pytest.fixture(autouse=True)
def no_docker_host(monkeypatch):
    """config.yaml `engines:` chooses the engines here; DOCKER_HOST would win over it."""
    monkeypatch.delenv("DOCKER_HOST", raising=False)


def project(root, bases, engines, smoke=SMOKE):
    proj = FixtureProject(root)
    proj.add_package("libgreet", "1.0", LIBGREET)
    proj.add_package("hello", "1.0", HELLO, depends=["libgreet"], smoke=smoke)
    proj.add_package("shell", "1.0", SHELL, smoke=["bash -c 'exit 0'"])
    proj.add_distribution("imgck", ["shell", "hello", "libgreet"],
                          image={"name": "dappdeps-test/imgck"})
    return proj, proj.write_config(checks={"images": bases}, engines=engine_config(*engines))


def test_smoke_tests_pass_in_busybox_and_scratch_in_both_engines(clients, bases, tmp_path):
    """One check-images:imgck task, both engines: every result names its engine."""
    proj, config = project(tmp_path, bases, ENGINE_NAMES)
    first = run_doit(config, "check-images:imgck")
    assert first.returncode == 0, first.text[-3000:]
    assert first.ran("check-images:") == ["check-images:imgck"]
    assert first.ran("load:") == ["load:imgck"]
    report = json.loads((proj.cache / "checks/imgck.images.json").read_text())
    assert report["mounted"] == ["dappdeps-test/imgck:1.0"]
    assert [e["name"] for e in report["engines"]] == list(ENGINE_NAMES)
    for found in report["engines"]:
        version = clients[found["name"]].version()
        assert (found["kind"], found["version"], found["api_version"]) == \
            (found["name"], version["Version"], version["ApiVersion"])
        where = f"[{found['name']}: {found['kind']} {found['version']}, API {found['api_version']}]"
        for ref in bases:
            assert f"check-images:imgck: {where} in {ref}: 4/4 smoke tests passed" in first.out, \
                first.out
        assert sorted(found["images"]) == sorted(bases)
        assert all(r["status"] == 0 for results in found["images"].values() for r in results)
    stamp = json.loads((proj.cache / "checks/imgck.images.stamp.json").read_text())
    assert "docker" in json.dumps(stamp) and "podman" in json.dumps(stamp)
    # the nightly report shows which engine each load and each check result came from
    from tasks.model.config import load_config
    from tasks.nightly.records import image_records
    from tasks.report.markdown import render_markdown
    (image,) = image_records(load_config(proj.root))
    assert [(e["name"], e["kind"]) for e in image["engines"]] == \
        sorted((n, n) for n in ENGINE_NAMES)
    assert sorted((c["engine"], c["image"], c["passed"], c["total"]) for c in image["checks"]) \
        == sorted((n, ref, 4, 4) for n in ENGINE_NAMES for ref in bases)
    page = render_markdown({"started": "2026-12-01T00:00:00Z", "result": "ok", "summary": "ok",
                            "totals": {}, "seconds": 1, "exit_code": 0, "id": "x", "tasks": [],
                            "images": [image]})
    for found in report["engines"]:
        label = f"{found['kind']} {found['version']} (API {found['api_version']})"
        assert f"| imgck | {found['name']} | {label} | `{bases[0]}` | 4/4 |" in page, page
    # the volume containers are gone again, in both engines
    for client in clients.values():
        assert not client.containers.list(all=True, filters={"name": "dappdeps-check-imgck"})

    again = run_doit(config, "check-images:imgck")
    assert again.returncode == 0 and again.ran("check-images:") == [], again.text[-2000:]


@pytest.mark.parametrize("engine_name", ENGINE_NAMES)
def test_a_command_failing_in_one_image_fails_the_task(clients, bases, engine_name, tmp_path):
    # busybox has /bin/busybox, scratch nothing of its own; the empty root of
    # check:<dist> (which runs first) passes it as it is no container (no .containerenv
    # from Podman, no .dockerenv from Docker).
    probe = ("test -x /bin/busybox || "
             "! { test -e /run/.containerenv || test -e /.dockerenv; }")
    proj, config = project(tmp_path, bases, [engine_name], smoke=SMOKE + [probe])
    run = run_doit(config, "check-images:imgck")
    assert run.returncode != 0
    assert f"] in {bases[0]}: 5/5 smoke tests passed" in run.out, run.out
    assert f"[{engine_name}: {engine_name} " in run.out
    assert f"] in {bases[1]}: 4/5 smoke tests passed" in run.out
    assert f"FAILED in {bases[1]} (exit 1, engine {engine_name}): {probe}   [hello]" in run.out
    report = json.loads((proj.cache / "checks/imgck.images.json").read_text())
    (found,) = report["engines"]
    assert found["name"] == found["kind"] == engine_name
    assert [r["status"] for r in found["images"][bases[1]]][-1] == 1
    # failed: no stamp, so it runs again
    rerun = run_doit(config, "check-images:imgck")
    assert rerun.returncode != 0 and rerun.ran("check-images:") == ["check-images:imgck"]


@pytest.mark.parametrize("engine_name", ENGINE_NAMES)
def test_missing_base_image_is_named(clients, bases, engine_name, tmp_path):
    _proj, config = project(tmp_path, [bases[0], "dappdeps-test/no-such-image:9"], [engine_name])
    run = run_doit(config, "check-images:imgck")
    assert run.returncode != 0
    assert "no image 'dappdeps-test/no-such-image:9'" in run.text and "checks.images" in run.text
    assert f"in engine {engine_name}" in run.text


@pytest.mark.parametrize("engine_name", ENGINE_NAMES)
def test_the_users_entrypoint_does_not_run_first(clients, bases, engine_name, tmp_path):
    """A user's image is not trusted: with an entrypoint that would fail every command
    (and could forge results), check-images still runs our commands, not its."""
    hostile = ensure_image(clients[engine_name], tmp_path, "dappdeps-test/entrypoint",
                           busybox_files(), cmd=["sh"],
                           entrypoint=["/bin/busybox", "sh", "-c", "echo HIJACKED; exit 42"])
    _proj, config = project(tmp_path, [hostile], [engine_name])
    run = run_doit(config, "check-images:imgck")
    assert run.returncode == 0, run.text[-3000:]
    assert f"] in {hostile}: 4/4 smoke tests passed" in run.out
    assert "HIJACKED" not in run.text
