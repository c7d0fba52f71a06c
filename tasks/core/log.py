"""Messages of the engine: one whole line per write, so parallel builds never merge lines."""
import re
import sys
import threading

_LOCK = threading.Lock()


# C0 controls but tab and newline, DEL, and C1 controls: a build's log lines reach the
# terminal through our messages, and escape sequences there could rewrite the screen,
# set the clipboard (OSC 52) or fake a result
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")


def printable(text):
    """Control characters shown as \\xNN, so nothing a build printed can drive the terminal."""
    return _CONTROLS.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def say(message):
    text = printable(message).rstrip("\n") + "\n"
    with _LOCK:
        sys.stderr.write(text)
        sys.stderr.flush()


def echo(message):
    """A stage's result line on stdout, written whole (print() writes the text and the
    newline separately: two threads merge lines). Past doit's capture: doit swaps
    sys.stdout for a capturing writer around each action, and with `-n N` threads the
    swaps race and leave sys.stdout on another task's capture (the line would vanish)."""
    text = printable(message).rstrip("\n") + "\n"
    stream = sys.stdout
    if type(stream).__module__.startswith("doit.") and sys.__stdout__ is not None:
        stream = sys.__stdout__             # doit's capture (maybe another task's)
    with _LOCK:
        stream.write(text)
        stream.flush()


def duration(seconds):
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.1f} s"
