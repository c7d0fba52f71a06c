"""User-facing errors: one paragraph that names the file, the field and what to do."""


class UserError(Exception):
    """A mistake in the user's input or environment; shown without a traceback."""

    def __init__(self, message, path=None, field=None, hint=None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.field = field
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
