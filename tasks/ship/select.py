"""What an image holds: prefix-relative glob patterns (include / exclude of config.yaml's
images), the entries they select, and the symlinks the selection leaves dangling."""
import re


def _glob_to_regex(pattern):
    """A prefix-relative glob: * and ? within one path segment, ** across segments,
    [...] classes. A pattern naming a folder also names everything below it."""
    pat = pattern.strip().strip("/")
    if pat in ("", "**"):
        return ".*"
    out, i, n = [], 0, len(pat)
    while i < n:
        c = pat[i]
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pat.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = pat.find("]", i + 2 if pat[i + 1:i + 2] in ("!", "]") else i + 1)
            if j < 0:
                out.append(re.escape(c))
                i += 1
                continue
            body = pat[i + 1:j]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out) + "(?:/.*)?"


def compile_patterns(patterns):
    """One compiled regex matching any of the globs (None when there are none)."""
    patterns = [p for p in (patterns or []) if p.strip()]
    if not patterns:
        return None
    return re.compile("^(?:" + "|".join(_glob_to_regex(p) for p in patterns) + ")$", re.S)


def select(entries, include=("**",), exclude=()):
    """Entries matched by include and not by exclude, plus the folders above them."""
    inc = compile_patterns(include)
    exc = compile_patterns(exclude)
    everything = inc is not None and inc.pattern == "^(?:.*)$"
    if everything and exc is None:
        return [e for e in entries if e["type"] != "whiteout"]
    chosen = set()
    for e in entries:
        if e["type"] == "whiteout":
            continue
        path = e["path"]
        if (everything or (inc is not None and inc.match(path))) and not (exc and exc.match(path)):
            chosen.add(path)
    parents = set()
    for path in chosen:
        while "/" in path:
            path = path.rsplit("/", 1)[0]
            if path in parents:
                break
            parents.add(path)
    keep = chosen | parents
    return [e for e in entries if e["path"] in keep]


def dangling_links(entries):
    """Symlinks (within the prefix) whose target is not in the selected entries."""
    present = {e["path"] for e in entries}
    out = []
    for e in entries:
        if e["type"] != "symlink" or e["target"].startswith("/"):
            continue
        parts = e["path"].split("/")[:-1]
        for seg in e["target"].split("/"):
            if seg == "..":
                if parts:
                    parts.pop()
            elif seg not in ("", "."):
                parts.append(seg)
        target = "/".join(parts)
        if target and target not in present:
            out.append(e["path"])
    return out
