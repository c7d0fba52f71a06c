"""A recipe's `per_platform` fields: what differs when a component is built for another
platform (docs/recipes.md). E.g. the toolchain's recipes name the amd64 dynamic linker;
for linux/arm64 they say what to use instead.

    per_platform:
      linux/arm64:
        environment: {CFLAGS: -O2}        # replaces the recipe's own field
        append:
          pre_configure: |                # goes after the recipe's own text (or list)
            sed -i ... Makefile

Only how a component is built and checked can differ, never what it is (name, version,
depends, license): those are the same on every platform. Its sources can differ where
upstream publishes the same release per machine (PyPI's prebuilt wheels). Validated when
the recipe loads, like the recipe's own fields.
"""
from tasks.core.errors import UserError, cut
from tasks.model.schema import validate_value

# what `per_platform.<platform>` may replace; `sources` and `license_files` for what is
# the same release built by others per platform (a prebuilt wheel: one file per machine)
OVERRIDABLE = ("sources", "license_files", "emulated", "environment", "out_of_tree", "pre_configure", "configure", "make", "install",
               "post_install", "script", "test", "smoke")
# ... and what its `append` may extend, after the recipe's own
APPENDABLE = ("pre_configure", "configure", "make", "install", "post_install", "script",
              "smoke")


def validate(data, path, fields, source_check):
    """Each platform's fields, validated against the recipe's `fields` (its Schema's)
    and `source_check` (sources, path, field); only the keys given are kept."""
    out = {}
    for platform, over in data["per_platform"].items():
        where = f"per_platform.{platform}"
        _known(over, OVERRIDABLE + ("append",), path, where, "cannot differ per platform")
        extra = over.get("append") or {}
        if not isinstance(extra, dict):
            raise UserError("expected a mapping of fields to append to.", path, f"{where}.append")
        _known(extra, APPENDABLE, path, f"{where}.append", "cannot be appended to")
        checked = {key: _value(fields[key], value, path, f"{where}.{key}")
                   for key, value in over.items() if key != "append"}
        if extra:
            checked["append"] = {key: _value(fields[key], value, path, f"{where}.append.{key}")
                                 for key, value in extra.items()}
        if "sources" in checked:
            source_check(checked["sources"], path, f"{where}.sources")
        script = checked.get("script", data["script"]) + checked.get("append", {}).get("script", "")
        if data["build"] == "script" and not script.strip():
            raise UserError("is empty but build is 'script'.", path, f"{where}.script")
        out[platform] = checked
    return out


def apply(data, platform):
    """The recipe's validated fields with `platform`'s applied; None when it has none."""
    over = dict(data["per_platform"].get(platform) or {})
    if not over:
        return None
    extra = over.pop("append", {})
    out = {**data, **over}
    for key, value in extra.items():
        if isinstance(value, str):
            out[key] = (out[key].rstrip("\n") + "\n" if out[key].strip() else "") + value
        else:
            out[key] = list(out[key]) + list(value)
    return out


def _known(mapping, allowed, path, where, problem):
    unknown = sorted(str(k) for k in mapping if k not in allowed)
    if unknown:
        raise UserError(f"'{cut(unknown[0])}' {problem}.", path, f"{where}.{unknown[0]}",
                        f"Fields that can: {', '.join(allowed)}.")


def _value(spec, value, path, where):
    """A field's value as the recipe's own would be checked; empty (None) is its default."""
    if value is None:
        return spec.default() if callable(spec.default) else spec.default
    return validate_value(spec, value, path, where)
