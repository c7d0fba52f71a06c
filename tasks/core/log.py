"""Messages of the engine: one whole line per write, so parallel builds never merge lines."""
import sys
import threading

_LOCK = threading.Lock()


def say(message):
    text = str(message).rstrip("\n") + "\n"
    with _LOCK:
        sys.stderr.write(text)
        sys.stderr.flush()


def echo(message):
    """A stage's result line on stdout, written whole (print() writes the text and the
    newline separately: two threads merge lines). Past doit's capture: doit swaps
    sys.stdout for a capturing writer around each action, and with `-n N` threads the
    swaps race and leave sys.stdout on another task's capture (the line would vanish)."""
    text = str(message).rstrip("\n") + "\n"
    stream = sys.stdout
    if type(stream).__module__.startswith("doit.") and sys.__stdout__ is not None:
        stream = sys.__stdout__             # doit's capture (maybe another task's)
    with _LOCK:
        stream.write(text)
        stream.flush()


def duration(seconds):
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.1f} s"
