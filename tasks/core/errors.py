"""User-facing errors: one paragraph that names the file, the field and what to do."""

SHORT = 80          # a value quoted in a message is cut to this many characters
MAX_MESSAGE = 4000  # a plain UserError is never longer (a huge value must not flood the log)


def cut(value, limit=SHORT):
    """value as text, at most `limit` characters: longer ones end in '…'. Control
    characters are shown escaped, so a quoted value cannot break the one-line message."""
    text = str(value)
    if not text.isprintable():
        text = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[:limit - 1] + "…"


class UserError(Exception):
    """A mistake in the user's input or environment; shown without a traceback."""

    def __init__(self, message, path=None, field=None, hint=None):
        if type(self) is UserError and len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE - 1] + "…"
        self.message = message
        self.path = str(path) if path is not None else None
        self.field = cut(field, 2 * SHORT) if field is not None else None
        self.hint = hint
        super().__init__(self.render())

    def render(self):
        where = ""
        if self.path and self.field:
            where = f"{self.path}: field '{self.field}': "
        elif self.path:
            where = f"{self.path}: "
        elif self.field:
            where = f"field '{self.field}': "
        text = f"error: {where}{self.message}"
        if self.hint:
            text += f" {self.hint}"
        return text


class FetchError(UserError):
    """A source could not be obtained from any location."""


class BuildError(UserError):
    """A component's build failed; the message carries the log tail and path."""


class DiskFull(UserError):
    """ENOSPC/EDQUOT: which folder, how much is free, how much was needed."""

    def __init__(self, exc, folder, needed=None, what="writing"):
        # what: "writing" (then the file that failed), "build:base/sed, writing", ...
        import shutil

        from tasks.core.files import human
        self.folder = str(folder)
        try:
            usage = shutil.disk_usage(folder)
            free = f"{human(usage.free)} free of {human(usage.total)}"
        except OSError:
            free = "free space unknown"
        need = f"; this step needed at least {human(needed)}" if needed else ""
        target = getattr(exc, "filename", None)
        super().__init__(
            f"the disk is full ({getattr(exc, 'strerror', None) or exc}): {what}"
            f"{' ' + str(target) if target else ''} failed. {folder} has {free}{need}.",
            hint="Nothing was counted as done. Free space there (`doit reclaim` removes "
                 "leftovers of earlier runs and work folders of failed builds) and run again.")

