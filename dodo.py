"""dappdeps pipeline: `doit list` shows the stages, `doit` runs them all.

The stages are declared once, in tasks/model/pipeline.py; each is one module under
tasks/stages/. This file only hands them to doit, in pipeline order.
Unattended runs: bin/nightly (lock, report; docs/nightly.md).
"""
from tasks.model.project import project
from tasks.stages import DOIT_CONFIG, creators, default_tasks, install_signal_handlers

DOIT_CONFIG = dict(DOIT_CONFIG, default_tasks=default_tasks(project))
globals().update(creators())
install_signal_handlers()
