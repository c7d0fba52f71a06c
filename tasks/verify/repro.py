"""Reproducibility: two builds of one component compared file by file, each difference
with a hint at its cause (docs/reproducibility.md). Pure functions over two stage folders
(cache/stage/<dist>/<component>/ of the first and of the second build: tree/ and
manifest.json); the stage that makes the second build is tasks/stages/repro.py.

Hints, in the order they are tried on a file whose content differs:
  build id      ELF files equal once their .note.gnu.build-id is masked
  timestamp     equal once dates, times and epoch numbers near the builds are masked
                (also a gzip header's time, and an ar member's time, owner and mode:
                what `ar` records when not in deterministic mode)
  build path    equal once either cache's path and /tmp/<name> paths are masked
  ordering      the same lines, words or ar members, in another order
  content       none of the above (a random number, a host-dependent value...)
and, for the entry itself: "only in first build", "only in second build", "type",
"mode (umask?)", "hard links", "opaque folder".
"""
import gzip
import io
import re
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from tasks.core import canonical

MAX_ANALYSED = 64 * 1024 * 1024     # bigger differing files get "content" unread
EXCERPT = 24                        # bytes shown each side of the first difference
SLACK = 2 * 86400                   # epoch numbers this close to the builds are times
FIELDS = ("type", "mode", "sha256", "target", "link", "opaque")


def summary_path(cache, dist_name):
    """cache/reports/repro-<dist>.json: the latest measurement (the nightly report reads it)."""
    return Path(cache) / "reports" / f"repro-{dist_name}.json"


@dataclass(frozen=True)
class Context:
    """What varies between the two builds: the caches' paths and the time window."""
    paths: tuple = ()               # folders a leaked build path would start with
    window: tuple = (0, 0)          # (earliest, latest) epoch seconds of either build

    @classmethod
    def of(cls, paths, *build_times):
        times = [t for t in build_times if t] or [time.time()]
        found = sorted({str(p) for p in paths if p} | {str(Path(p).resolve()) for p in paths if p},
                       key=len, reverse=True)
        return cls(tuple(found), (min(times) - SLACK, max(times) + SLACK))


# ---- one component ---------------------------------------------------------------------
def build_times(stage_dir):
    """(started, finished) of a component's build (build.json), or ()."""
    try:
        doc = canonical.load(Path(stage_dir) / "build.json")
        return tuple(int(doc[k]) for k in ("started", "finished"))
    except (OSError, ValueError, KeyError, TypeError):
        return ()


def compare_component(first, second, context):
    """Compare two stage folders: {"files", "identical", "differing": [{path, hint,
    detail}]} (plus "error" when a manifest cannot be read: nothing to compare)."""
    first, second = Path(first), Path(second)
    entries = []
    for folder in (first, second):
        try:
            entries.append({e["path"]: e for e in canonical.load(folder / "manifest.json")["entries"]})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return {"files": 0, "identical": 0, "differing": [],
                    "error": f"no readable manifest in {folder} ({type(exc).__name__})"}
    old, new = entries
    out = {"files": 0, "identical": 0, "differing": []}
    for path in sorted(set(old) | set(new)):
        out["files"] += 1
        a, b = old.get(path), new.get(path)
        if a is not None and b is not None and _same(a, b):
            out["identical"] += 1
            continue
        if b is None:
            hint, detail = "only in first build", ""
        elif a is None:
            hint, detail = "only in second build", ""
        else:
            hint, detail = explain_entry(a, b, first / "tree" / path, second / "tree" / path,
                                         context)
        out["differing"].append({"path": path, "hint": hint, "detail": detail})
    return out


def _same(a, b):
    return all(a.get(k) == b.get(k) for k in FIELDS)


def explain_entry(a, b, path_a, path_b, context):
    """(hint, detail) for one path both builds made differently."""
    if a["type"] != b["type"]:
        return "type", f"{a['type']} vs {b['type']}"
    hints, detail = [], ""
    if a["type"] == "symlink" and a.get("target") != b.get("target"):
        found, detail = explain_bytes(a["target"].encode(), b["target"].encode(), context)
        hints += found
    if a["type"] == "file" and a.get("sha256") != b.get("sha256"):
        try:
            if max(a.get("size", 0), b.get("size", 0)) > MAX_ANALYSED:
                found, detail = ["content"], "too big to analyse"
            else:
                found, detail = explain_bytes(Path(path_a).read_bytes(), Path(path_b).read_bytes(),
                                              context)
        except OSError as exc:
            found, detail = ["content"], f"unreadable: {exc.strerror or exc}"
        hints += found
    if a.get("link") != b.get("link"):
        hints.append("hard links")
    if a.get("opaque") != b.get("opaque"):
        hints.append("opaque folder")
    if a.get("mode") != b.get("mode"):
        hints.append("mode (umask?)")
        detail = detail or f"mode {a.get('mode', 0):04o} vs {b.get('mode', 0):04o}"
    return ", ".join(dict.fromkeys(hints)) or "content", detail


# ---- one file's bytes ----------------------------------------------------------------------
def explain_bytes(a, b, context):
    """(hints, detail): why two contents differ, by masking what varies between builds."""
    if a == b:
        return [], ""
    detail = first_difference(a, b)
    if a[:4] == b[:4] == b"\x7fELF":
        ids = build_id(a), build_id(b)
        a, b = mask(a, ids[0]), mask(b, ids[1])
        if a == b:
            return ["build id"], f"build id {_hex(ids[0])} vs {_hex(ids[1])}"
    if a[:2] == b[:2] == b"\x1f\x8b":
        if a[:4] + a[8:] == b[:4] + b[8:]:
            return ["timestamp"], "gzip header time"
        inner = _gunzip(a), _gunzip(b)
        if None not in inner and inner[0] != inner[1]:
            found, inner_detail = explain_bytes(inner[0], inner[1], context)
            return found, f"compressed: {inner_detail}"
    masks = {"timestamp": lambda d: mask_times(d, context.window),
             "build path": lambda d: mask_paths(d, context.paths)}
    # the fewest causes that explain it: one alone, then both; equal, then reordered
    tries = [()] + [(name,) for name in masks] + [tuple(masks)]
    masked = {(): (a, b)}
    for names in tries[1:]:
        x, y = a, b
        for name in names:
            x, y = masks[name](x), masks[name](y)
        if x == y:
            return list(names), detail
        masked[names] = (x, y)
    for names in tries:
        if reordered(*masked[names]):
            return list(names) + ["ordering"], detail
    return ["content"], detail


def build_id(data):
    """The GNU build id of an ELF file's bytes, or None."""
    from elftools.common.exceptions import ELFError
    from elftools.construct import ConstructError
    from elftools.elf.elffile import ELFFile
    try:
        for section in ELFFile(io.BytesIO(data)).iter_sections():
            if section.header["sh_type"] != "SHT_NOTE":
                continue
            for note in section.iter_notes():
                if note["n_type"] == "NT_GNU_BUILD_ID":
                    return bytes.fromhex(note["n_desc"])
    except (ELFError, ConstructError, ValueError, EOFError, KeyError, TypeError, AttributeError):
        return None                         # a damaged ELF file: no build id to mask
    return None


def mask(data, needle):
    return data.replace(needle, b"\0" * len(needle)) if needle else data


def _hex(raw):
    return raw.hex() if raw else "none"


def _gunzip(data):
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as fh:
            return fh.read(MAX_ANALYSED)
    except (OSError, EOFError, zlib.error):
        return None


_MONTH = rb"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIMES = re.compile(
    rb"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?"
    rb"|\d{4}/\d{2}/\d{2}"
    rb"|(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),? )?" + _MONTH + rb" [ 0-3]\d(?:,? \d{4})?"  # __DATE__
    rb"|\d{1,2} " + _MONTH + rb" \d{4}"                                                # RFC 2822
    rb"|\d{2}:\d{2}:\d{2}(?:\.\d+)?"                                                   # __TIME__
    rb"|(?<![0-9])(?P<epoch>1\d{9})(?:\d{3}|\d{6}|\d{9})?(?![0-9])")                   # s, ms, us, ns


def mask_times(data, window):
    """Dates, times and epoch numbers (seconds to nanoseconds) within the window masked;
    in an ar archive also each member's time."""
    data = _ar_without_times(data)

    def sub(match):
        epoch = match.group("epoch")
        if epoch is not None and not window[0] <= int(epoch) <= window[1]:
            return match.group()
        return b"<TIME>"
    return _TIMES.sub(sub, data)


_TMP = re.compile(rb"/tmp/[A-Za-z0-9._-]+")


def mask_paths(data, paths):
    """Either cache's folder and temporary file names (/tmp/ccXXXXXX.o) masked."""
    for path in paths:                      # longest first: one cache may hold the other
        data = data.replace(str(path).encode(), b"<BUILD>")
    return _TMP.sub(b"/tmp/<TMP>", data)


# ---- ordering ------------------------------------------------------------------------------
def ar_members(data):
    """[(header, body)] of a Unix ar archive (static library), or None."""
    if not data.startswith(b"!<arch>\n"):
        return None
    out, pos = [], 8
    while pos + 60 <= len(data):
        head = data[pos:pos + 60]
        if head[58:60] != b"`\n" or not head[48:58].strip().isdigit():
            return None
        size = int(head[48:58])
        out.append((head, data[pos + 60:pos + 60 + size]))
        pos += 60 + size + (size & 1)
    return out


def _ar_without_times(data):
    members = ar_members(data)
    if not members:
        return data
    parts = [b"!<arch>\n"]
    for head, body in members:
        # time, owner and mode: what `ar` records without D (deterministic mode)
        parts += [head[:16] + b"0".ljust(32) + head[48:], body, b"\n" if len(body) & 1 else b""]
    return b"".join(parts)


_INDEXES = (b"/ ", b"/SYM64/", b"// ")      # symbol table and long names: follow the order


def reordered(a, b):
    """The same ar members, lines or words in another order."""
    members = ar_members(a), ar_members(b)
    if None not in members:
        bodies = [sorted(body for head, body in m if not head.startswith(_INDEXES)) for m in members]
        return bodies[0] == bodies[1]
    return sorted(a.split(b"\n")) == sorted(b.split(b"\n")) or sorted(a.split()) == sorted(b.split())


# ---- words for people ----------------------------------------------------------------------
def first_difference(a, b):
    """Where two contents first differ, with a little of each side."""
    n, at, step = min(len(a), len(b)), 0, 1 << 16
    while at < n and a[at:at + step] == b[at:at + step]:
        at += step                          # whole blocks first: a big file's prefix is fast
    end = min(n, at + step)
    at = next((i for i in range(min(at, n), end) if a[i] != b[i]), end)
    start = max(0, at - EXCERPT)
    return (f"byte {at}: {_show(a[start:at + EXCERPT])} vs {_show(b[start:at + EXCERPT])}"
            + ("" if len(a) == len(b) else f" (sizes {len(a)} vs {len(b)})"))


def _show(raw):
    return repr(raw.decode("latin-1"))[:120]


def totals(components):
    """Sums over {name: compare_component() result}: files, identical, differing, percent."""
    files = sum(r["files"] for r in components.values())
    same = sum(r["identical"] for r in components.values())
    failed = sum(1 for r in components.values() if r.get("error"))
    return {"files": files, "identical": same, "differing": files - same, "failed": failed,
            "percent": round(100.0 * same / files, 2) if files else (0.0 if failed else 100.0)}


def table(components):
    """The per-component table printed by repro:<dist>, as lines."""
    rows = [("component", "files", "identical", "differing")]
    for name, r in components.items():
        rows.append((name, str(r["files"]), str(r["identical"]),
                     "second build failed" if r.get("error") else str(len(r["differing"]))))
    t = totals(components)
    rows.append(("total", str(t["files"]), str(t["identical"]), str(t["differing"])))
    width = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width[i]) if i == 0 else cell.rjust(width[i])
                       for i, cell in enumerate(row)) for row in rows]
    return lines + [f"{t['percent']:.2f} % bit-identical"]
