"""dappdeps pipeline: `doit list` shows the stages, `doit` runs them all.

Each stage is one module under tasks/; this file only puts them in order.
Unattended runs: bin/nightly (lock, report; docs/nightly.md).
"""
from tasks.stages import host as hostcheck
from tasks.stages import legal
from tasks.stages import build as stage_build
from tasks.stages import check as stage_checks
from tasks.stages import fetch as stage_fetch
from tasks.stages import check_images as stage_image_checks
from tasks.stages import image as stage_images
from tasks.stages import push as stage_push
from tasks.stages import test as stage_tests
from tasks.stages.doitconfig import DOIT_CONFIG, install_signal_handlers  # noqa: F401
from tasks.model.pipeline import adopt_docs


def task_check_host():      # host tools for the sandboxed builds
    return hostcheck.task_check_host()


def task_fetch():           # download + verify sources
    yield from stage_fetch.task_fetch()


def task_build():           # compile components in sandboxes
    yield from stage_build.task_build()


def task_assemble():        # lay a distribution's outputs together
    yield from stage_build.task_assemble()


def task_check():           # ELF audit + smoke tests in an empty root
    yield from stage_checks.task_check()


def task_test():            # upstream test suites, on demand (not in a plain `doit`)
    yield from stage_tests.task_test()


def task_image():           # export images (docker-archive + OCI)
    yield from stage_images.task_image()


def task_legal():           # SBOM + license texts per image
    yield from legal.task_legal()


def task_load():            # load images into a Docker-API engine
    yield from stage_images.task_load()


def task_push():            # push images to a registry (image_registry)
    yield from stage_push.task_push()


def task_cache_push():      # seed the build cache with what is built already
    yield from stage_push.task_cache_push()


def task_check_images():    # smoke tests in busybox/Debian/... containers
    yield from stage_image_checks.task_check_images()


adopt_docs(globals(), hostcheck, stage_fetch, stage_build, stage_checks, stage_tests, stage_images,
           stage_push, legal, stage_image_checks)
install_signal_handlers()
