"""Shell words for the scripts the framework renders (bash)."""


def dquote(value):
    """Double-quote for the shell, keeping $VARIABLES live (recipe values may use $PREFIX)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`") + '"'


def words(items):
    return " ".join(dquote(item) for item in items)
