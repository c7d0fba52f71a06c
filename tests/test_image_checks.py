"""check-images:<dist>: a fixture distribution built by the real pipeline, exported,
loaded into the engine (Podman here) and smoke-tested inside busybox and scratch
containers with its image mounted --volumes-from, the seed's way."""
import json
import textwrap

import pytest

from conftest import run_doit
from enginefixture import busybox_files, engine, ensure_image
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
def client():
    return engine()


@pytest.fixture(scope="module")
def bases(client, tmp_path_factory):
    work = tmp_path_factory.mktemp("bases")
    return [ensure_image(client, work, "dappdeps-test/busybox", busybox_files(), cmd=["sh"]),
            ensure_image(client, work, "dappdeps-test/scratch", {})]


def project(root, bases, smoke=SMOKE):
    proj = FixtureProject(root)
    proj.add_package("libgreet", "1.0", LIBGREET)
    proj.add_package("hello", "1.0", HELLO, depends=["libgreet"], smoke=smoke)
    proj.add_package("shell", "1.0", SHELL, smoke=["bash -c 'exit 0'"])
    proj.add_distribution("imgck", ["shell", "hello", "libgreet"],
                          image={"name": "dappdeps-test/imgck"})
    return proj, proj.write_config(checks={"images": bases})


def test_smoke_tests_pass_in_busybox_and_scratch(client, bases, tmp_path):
    proj, config = project(tmp_path, bases)
    first = run_doit(config, "check-images:imgck")
    assert first.returncode == 0, first.text[-3000:]
    assert first.ran("check-images:") == ["check-images:imgck"]
    for ref in bases:
        assert f"in {ref}: 4/4 smoke tests passed" in first.out, first.out
    report = json.loads((proj.cache / "checks/imgck.images.json").read_text())
    assert report["mounted"] == ["dappdeps-test/imgck:1.0"]
    assert sorted(report["images"]) == sorted(bases)
    assert all(r["status"] == 0 for results in report["images"].values() for r in results)
    # the volume containers are gone again
    assert not client.containers.list(all=True, filters={"name": "dappdeps-check-imgck"})

    again = run_doit(config, "check-images:imgck")
    assert again.returncode == 0 and again.ran("check-images:") == [], again.text[-2000:]


def test_a_command_failing_in_one_image_fails_the_task(client, bases, tmp_path):
    # busybox has /bin/busybox, scratch nothing of its own; the empty root of
    # check:<dist> (which runs first) passes it as it is no container (no .containerenv).
    probe = "test -x /bin/busybox || ! test -e /run/.containerenv"
    proj, config = project(tmp_path, bases, smoke=SMOKE + [probe])
    run = run_doit(config, "check-images:imgck")
    assert run.returncode != 0
    assert f"in {bases[0]}: 5/5 smoke tests passed" in run.out, run.out
    assert f"in {bases[1]}: 4/5 smoke tests passed" in run.out
    assert f"FAILED in {bases[1]} (exit 1): {probe}   [hello]" in run.out
    report = json.loads((proj.cache / "checks/imgck.images.json").read_text())
    assert [r["status"] for r in report["images"][bases[1]]][-1] == 1
    # failed: no stamp, so it runs again
    rerun = run_doit(config, "check-images:imgck")
    assert rerun.returncode != 0 and rerun.ran("check-images:") == ["check-images:imgck"]


def test_missing_base_image_is_named(client, bases, tmp_path):
    _proj, config = project(tmp_path, [bases[0], "dappdeps-test/no-such-image:9"])
    run = run_doit(config, "check-images:imgck")
    assert run.returncode != 0
    assert "no image 'dappdeps-test/no-such-image:9'" in run.text and "checks.images" in run.text
