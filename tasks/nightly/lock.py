"""The nightly's lock on cache/nightly.lock: two runs never overlap."""
import fcntl
import json
import os
import time
from pathlib import Path


class RunLock:
    """An exclusive fcntl lock on a file that stays in place; the holder writes who it is
    into the file (pid, start, command) so that a waiting run can say whom it waits for.
    The kernel drops the lock when the holder dies, however it dies."""

    def __init__(self, path):
        self.path = Path(path)
        self.fd = None

    def acquire(self, wait, info):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(min(0.2, max(0.01, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info, sort_keys=True) + "\n").encode(), 0)
        self.fd = fd
        return True

    def holder(self):
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def release(self):
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
