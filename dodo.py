"""dappdeps pipeline: `doit list` shows the stages, `doit` runs them all.

Stages (one module each under tasks/):
  check-host   host tools for the sandboxed builds     tasks/hostcheck.py
  fetch        download + verify sources              tasks/stage_fetch.py
  build        compile components in sandboxes         tasks/stage_build.py
  assemble     lay a distribution's outputs together   tasks/stage_build.py
  check        ELF audit + smoke tests, empty root     tasks/stage_checks.py
  image        export images (docker-archive + OCI)    tasks/stage_images.py
  legal        SBOM + license texts per image          tasks/legal.py
  load         load them into a Docker-API engine      tasks/stage_images.py
Unattended runs: bin/nightly (lock, report, SBOM; docs/nightly.md).
"""
from tasks.doitconfig import DOIT_CONFIG, install_signal_handlers  # noqa: F401
from tasks.hostcheck import task_check_host  # noqa: F401
from tasks.legal import task_legal  # noqa: F401
from tasks.stage_build import task_assemble, task_build  # noqa: F401
from tasks.stage_checks import task_check  # noqa: F401
from tasks.stage_fetch import task_fetch  # noqa: F401
from tasks.stage_images import task_image, task_load  # noqa: F401

install_signal_handlers()
