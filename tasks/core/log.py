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
    newline separately, so two worker threads can merge their lines)."""
    text = str(message).rstrip("\n") + "\n"
    with _LOCK:
        sys.stdout.write(text)
        sys.stdout.flush()


def duration(seconds):
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.1f} s"
