"""SIGTERM, SIGINT and SIGHUP stop a nightly run like Ctrl-C, once: every sandbox of every
worker thread is killed at once (tasks/build/sandbox.py stop_all)."""
import signal

from tasks.build import sandbox


class Signals:
    """SIGTERM/SIGINT/SIGHUP raise KeyboardInterrupt once (doit then saves what finished);
    later signals, and any signal while the report is written, are only recorded."""

    NAMES = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT", signal.SIGHUP: "SIGHUP"}

    def __init__(self):
        self.received = None
        self.armed = False

    def install(self):
        for sig in self.NAMES:
            signal.signal(sig, self._handler)
        self.armed = True

    def _handler(self, signum, frame):
        first = self.received is None
        if first:
            self.received = signum
        sandbox.stop_all()
        if first and self.armed:
            self.armed = False
            raise KeyboardInterrupt

    @property
    def name(self):
        return self.NAMES.get(self.received)
