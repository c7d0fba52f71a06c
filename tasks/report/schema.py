"""The JSON document of a nightly run (report.json): its schema, its vocabulary, its totals.

`format` is bumped on incompatible changes; the Markdown and HTML pages are rendered from
this document only (tasks.report.markdown, tasks.report.htmlpage).
"""
import re

from tasks.model.configschema import UPDATE_POLICIES

FORMAT = 1

STATUSES = ("ran", "failed", "blocked", "interrupted", "up-to-date", "ignored", "not-run")
RESULTS = ("ok", "failed", "interrupted", "error")
VERDICTS = ("current", "outdated", "security")        # doit outdated, per recipe
RUN_ID = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")

_num = {"type": "number", "minimum": 0}
_count = {"type": "integer", "minimum": 0}
_opt_num = {"type": ["number", "null"], "minimum": 0}
_opt_str = {"type": ["string", "null"]}
_strings = {"type": "array", "items": {"type": "string"}}

REPORT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://dappdeps.invalid/schemas/nightly-report-1.json",
    "title": "dappdeps nightly run report",
    "type": "object",
    "required": ["format", "id", "started", "finished", "seconds", "result", "exit_code",
                 "summary", "nothing_to_rebuild", "totals", "tasks", "images"],
    "additionalProperties": False,
    "properties": {
        "repro": {"type": "array", "description": "the latest repro:<dist> of each "
                  "distribution (cache/reports/repro-<dist>.json)",
                  "items": {"type": "object", "additionalProperties": False,
                            "required": ["distribution", "when", "ok", "files", "identical",
                                         "percent", "differing", "examples", "images_same",
                                         "summary"],
                            "properties": {
                                "distribution": {"type": "string"}, "when": {"type": "string"},
                                "ok": {"type": "boolean"}, "files": _count, "identical": _count,
                                "percent": {"type": "number", "minimum": 0, "maximum": 100},
                                "differing": _count, "images_same": {"type": "boolean"},
                                "summary": {"type": "string"},
                                "examples": {"type": "array", "items": {
                                    "type": "object", "required": ["component", "path", "hint"],
                                    "properties": {k: {"type": "string"} for k in
                                                   ("component", "path", "hint")}}}}}},
        "outdated": {"type": ["object", "null"], "description": "the latest `doit outdated` "
                     "(cache/reports/outdated.json, docs/outdated.md); null: never run",
                     "additionalProperties": False,
                     "required": ["when", "suites", "totals", "recipes", "summary"],
                     "properties": {
                         "when": {"type": "string"}, "summary": {"type": "string"},
                         "suites": {"type": "array", "items": {"type": "string"}},
                         "totals": {"type": "object", "additionalProperties": False,
                                    "required": list(VERDICTS),
                                    "properties": {v: _count for v in VERDICTS}},
                         "recipes": {"type": "array", "items": {
                             "type": "object", "additionalProperties": False,
                             "required": ["recipe", "shipped", "verdict", "cve_count", "cves"],
                             "properties": {
                                 "recipe": {"type": "string"}, "shipped": {"type": "string"},
                                 "debian": _opt_str, "suite": _opt_str, "upstream": _opt_str,
                                 "upstream_error": _opt_str, "note": {"type": "string"},
                                 "verdict": {"enum": list(VERDICTS)}, "cve_count": _count,
                                 "cves": {"type": "array", "items": {"type": "string"}}}}}}},
        "updates": {"type": ["object", "null"], "description": "bin/nightly --update "
                    "(docs/nightly.md, Updates); null: not asked",
                    "additionalProperties": False,
                    "required": ["policy", "branch", "error", "bumped", "refused"],
                    "properties": {
                        "policy": {"enum": list(UPDATE_POLICIES)}, "branch": _opt_str, "error": _opt_str,
                        "notes": _strings, "seconds": _num,
                        "bumped": {"type": "array", "items": {
                            "type": "object", "additionalProperties": False,
                            "required": ["recipe", "from", "to", "cves", "branch", "commit"],
                            "properties": {
                                "recipe": {"type": "string"}, "also": _strings,
                                "from": {"type": "string"}, "to": {"type": "string"},
                                "where": {"type": "string"}, "files": _strings, "cves": _strings,
                                "tasks": _strings, "branch": _opt_str,
                                "commit": {"type": ["string", "null"], "pattern": "^[0-9a-f]{40,64}$"},
                                "log": _opt_str, "notes": _strings}}},
                        "refused": {"type": "array", "items": {
                            "type": "object", "additionalProperties": False,
                            "required": ["recipe", "from", "to", "why"],
                            "properties": {
                                "recipe": {"type": "string"}, "from": {"type": "string"},
                                "to": _opt_str, "why": {"type": "string", "minLength": 1},
                                "attempted": {"type": "boolean"}, "log": _opt_str}}}}},
        "format": {"const": FORMAT},
        "id": {"type": "string", "pattern": RUN_ID.pattern},
        "started": {"type": "string", "format": "date-time"},
        "finished": {"type": "string", "format": "date-time"},
        "seconds": _num,
        "host": {"type": "string"},
        "root": {"type": "string", "description": "the project folder paths are relative to"},
        "config": {"type": "string"},
        "report_dir": {"type": "string"},
        "command": {"type": "array", "items": {"type": "string"}},
        "doit_args": {"type": "array", "items": {"type": "string"}},
        "parallel": {"type": "integer", "minimum": 1},
        "result": {"enum": list(RESULTS)},
        "exit_code": {"type": "integer"},
        "signal": _opt_str,
        "error": _opt_str,
        "summary": {"type": "string"},
        "nothing_to_rebuild": {"type": "boolean"},
        "totals": {
            "type": "object", "additionalProperties": False,
            "required": ["tasks", "busy_seconds", "peak_parallel"] + [s.replace("-", "_") for s in STATUSES],
            "properties": dict({s.replace("-", "_"): {"type": "integer", "minimum": 0} for s in STATUSES},
                               tasks={"type": "integer", "minimum": 0}, busy_seconds=_num,
                               peak_parallel={"type": "integer", "minimum": 0}),
        },
        "tasks": {
            "type": "array",
            "items": {
                "type": "object", "additionalProperties": False,
                "required": ["name", "stage", "status", "why", "started", "finished", "seconds"],
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "stage": {"type": "string"},
                    "status": {"enum": list(STATUSES)},
                    "why": _opt_str,
                    "started": _opt_num, "finished": _opt_num, "seconds": _opt_num,
                    "error": _opt_str,
                    "log": _opt_str,
                    "log_tail": {"type": "array", "items": {"type": "string"}},
                },
                "allOf": [
                    {"if": {"properties": {"status": {"const": "failed"}}},
                     "then": {"required": ["error"],
                              "properties": {"error": {"type": "string", "minLength": 1}}}},
                    {"if": {"properties": {"status": {"enum": ["ran", "failed"]}}},
                     "then": {"properties": {"started": {"type": "number"},
                                             "finished": {"type": "number"},
                                             "seconds": {"type": "number"}}}},
                ],
            },
        },
        "images": {
            "type": "array",
            "items": {
                "type": "object", "additionalProperties": False,
                "required": ["name", "distribution", "version", "exported"],
                "properties": {
                    "name": {"type": "string"}, "distribution": {"type": "string"},
                    "version": {"type": "string"}, "repository": {"type": "string"},
                    "exported": {"type": "boolean"},
                    "status": {"enum": list(STATUSES) + [None],
                               "description": "what image:<name> did in this run"},
                    "ref": _opt_str, "digest": _opt_str, "id": _opt_str,
                    "size": _opt_num, "files": _opt_num, "tar": _opt_str,
                    "sbom": _opt_str, "licenses": _opt_str,
                    "engines": {"type": "array", "description": "where load:<image> put it",
                                "items": {"type": "object", "required": ["name", "kind"],
                                          "properties": {k: {"type": "string"} for k in (
                                              "name", "kind", "version", "api_version",
                                              "status", "at")}}},
                    "checks": {"type": "array", "description": "check-images:<dist> results",
                               "items": {"type": "object",
                                         "required": ["engine", "kind", "image", "passed", "total"],
                                         "properties": {
                                             **{k: {"type": "string"} for k in (
                                                 "engine", "kind", "version", "api_version",
                                                 "image")},
                                             "passed": {"type": "integer", "minimum": 0},
                                             "total": {"type": "integer", "minimum": 0}}}},
                    "components": {"type": "array", "items": {
                        "type": "object", "required": ["name", "size"],
                        "properties": {"name": {"type": "string"}, "version": {"type": "string"},
                                       "license": {"type": "string"}, "size": _num,
                                       "files": _num}}},
                },
            },
        },
    },
}


def validate(report):
    """Raise jsonschema.ValidationError when the report does not follow REPORT_SCHEMA."""
    import jsonschema
    jsonschema.validate(report, REPORT_SCHEMA, format_checker=jsonschema.FormatChecker())


def peak_parallel(tasks):
    """The most tasks that ran at the same time."""
    events = []
    for t in tasks:
        if t.get("started") is not None and t.get("finished") is not None:
            events += [(t["started"], 1), (t["finished"], -1)]
    running = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        running += delta
        peak = max(peak, running)
    return peak


def totals(tasks):
    """The `totals` object of a report: tasks per status, busy time, peak parallelism."""
    out = {s.replace("-", "_"): 0 for s in STATUSES}
    for t in tasks:
        out[t["status"].replace("-", "_")] += 1
    out["tasks"] = len(tasks)
    out["busy_seconds"] = round(sum(t["seconds"] or 0 for t in tasks), 3)
    out["peak_parallel"] = peak_parallel(tasks)
    return out
