"""File helpers every wing uses: one way to write atomically, hash, remove and tail.

Kill-safety rests on write_atomic: the bytes reach the disk (fsync) before the
rename that makes them visible, so a crash leaves the old file or the new one.
"""
import errno
import fcntl
import hashlib
import os
import shutil
import threading
from contextlib import contextmanager
from pathlib import Path

CHUNK = 1 << 20


def write_atomic(path, data):
    """Replace `path` by `data` (str or bytes): temporary file, fsync, rename, fsync folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{_thread_id()}")
    if isinstance(data, str):
        data = data.encode()
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def syncfs(path):
    """Flush the whole filesystem holding `path` (a tree of thousands of files is cheaper
    to flush at once than file by file): outputs reach the disk before the key that says
    they are done."""
    import ctypes
    fd = os.open(path, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _thread_id():
    return threading.get_ident() % 100000


def unique_suffix():
    """`<pid>-<thread>`: part of every scratch name two runs or two threads could share;
    leftovers.py reads the pid back to tell a live run's scratch from a dead one's."""
    return f"{os.getpid()}-{_thread_id()}"


def pid_alive(pid):
    """Is process `pid` running (on this host)? A reused pid errs on the safe side."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


@contextmanager
def flocked(path, wait=True, on_wait=None, shared=False):
    """Hold a flock on `path` (created as needed): exclusive, or with `shared` one that
    other shared holders may hold too. Yields True when it had to wait for another holder
    (after calling on_wait()), False when it got the lock at once, and None when `wait`
    is False and another holder has it. Every call opens the file anew: flock belongs to
    the open file, so two threads of one process exclude each other like two processes
    (and one thread asking for a lock it already holds through another call waits for
    itself). The kernel drops the lock when its holder dies."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, mode | fcntl.LOCK_NB)
            waited = False
        except BlockingIOError:
            if not wait:
                yield None
                return
            if on_wait is not None:
                on_wait()
            fcntl.flock(fh, mode)
            waited = True
        yield waited


def is_disk_full(exc):
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def existing_parent(path):
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def tree_size(path):
    """Bytes of the files under `path` (apparent sizes; 0 when it is gone)."""
    total = 0
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def human(size):
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000


def sha256_file(path, bufsize=CHUNK):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(bufsize)
            if not chunk:
                break
            digest.update(chunk)
    return digest.hexdigest()


def force_rmtree(path):
    """Remove a tree even where a build left read-only folders (Go caches, `chmod -w`)."""
    def onerror(func, p, _exc):
        # chmod follows links: never make a link's target (maybe a host file) writable
        if not os.path.islink(p):
            os.chmod(p, 0o700)
        os.chmod(os.path.dirname(p), 0o700)
        func(p)
    if os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=onerror)
        else:
            os.unlink(path)


def tail(path, count):
    """The last `count` lines of a (log) file, read from at most its last 64 KiB."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            lines = fh.read().decode(errors="replace").splitlines(keepends=True)
    except OSError:
        return []
    return lines[-count:]


def append(path, text):
    with open(path, "a") as fh:
        fh.write(text + "\n")
