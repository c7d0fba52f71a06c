"""A bump's new recipe (bin/nightly --update, tasks/nightly/update.py): its new sources,
and the recipe file's text with them. Only the lines of the values that change are edited
(`version:`, an alternative's `file:`, `sha256:`, `urls:`, `inner:`, `debian_patches.source:`),
so comments and layout stay as written; what cannot be edited that way is refused. The caller
loads the result with the real loader and compares it with expected(): the old recipe with
the new values and nothing else."""
import copy
import re

from tasks.model.recipes import Alternative, read_yaml
from tasks.sources.outdated import PYPI_HOST

KEY = re.compile(r"^( *)(-\s+)?([A-Za-z_][A-Za-z0-9_]*):(.*)$")


class Refused(Exception):
    """This bump is not made; the text says why (`to`: the release not taken, if known)."""

    def __init__(self, why, to=None):
        super().__init__(why)
        self.to = to


def swap_value(line, old, new):
    """(line with the YAML scalar `old`, bare or quoted, replaced by `new`, how many):
    never inside its comment."""
    hash_ = re.search(r"\s#", line)
    body, comment = (line[:hash_.start()], line[hash_.start():]) if hash_ else (line, "")
    pattern = r"(?<=[\s\[,:'\"])" + re.escape(old) + r"(?=[\s\],'\"]|$)"
    body, n = re.subn(pattern, lambda m: new, body)
    return body + comment, n


def edit_text(text, recipe, plan, changes):
    """The recipe file's text with the bump: only the lines of the values that change."""
    lines, done = text.splitlines(keepends=True), []

    def edit(i, old, new):
        lines[i], n = swap_value(lines[i], old, new)
        done.append(n == 1)

    if plan["version"] != recipe.version:
        tops = [i for i, l in enumerate(lines) if l.startswith("version:")]
        if len(tops) != 1:
            raise Refused(f"{recipe.path.name}: not one top-level `version:` line")
        edit(tops[0], recipe.version, plan["version"])
        purl = recipe.data.get("purl") or ""
        if purl.endswith(f"@{recipe.version}"):        # the SBOM's package URL names the version
            tops = [i for i, l in enumerate(lines) if l.startswith("purl:")]
            if len(tops) != 1:
                raise Refused(f"{recipe.path.name}: not one top-level `purl:` line")
            edit(tops[0], purl, new_purl(purl, recipe.version, plan["version"]))
    for (i, j), new in changes.items():
        old = recipe.sources[i].alternatives[j]
        at = [n for n, l in enumerate(lines) if (m := KEY.match(l)) and m[3] == "file"
              and swap_value(l, old.file, old.file)[1] == 1]
        if len(at) != 1:
            raise Refused(f"{recipe.path.name}: not one `file: {old.file}` line ({len(at)})")
        m = KEY.match(lines[at[0]])
        col, key = len(m[1]) + len(m[2] or ""), "file"
        edit(at[0], old.file, new.file)
        for n in range(at[0] + 1, len(lines)):
            line = lines[n]
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            indent = len(line) - len(line.lstrip(" "))
            if indent < col:
                break
            if indent == col:
                key = KEY.match(line)[3] if KEY.match(line) else None
                if key == "sha256" and old.sha256 != new.sha256:
                    edit(n, old.sha256, new.sha256)
                elif key == "inner" and old.inner != new.inner:
                    edit(n, old.inner, new.inner)
            if key == "urls" and (indent == col or line.lstrip().startswith("- ")):
                for a, b in zip(old.urls, new.urls):
                    if a != b and swap_value(line, a, a)[1]:
                        edit(n, a, b)
    if plan["debian_tar"] and plan["debian_tar"][0] != plan["debian_tar"][1]:
        at = [n for n, l in enumerate(lines) if re.match(r"^ +source:", l)
              and swap_value(l, plan["debian_tar"][0], "")[1] == 1]
        if len(at) != 1:
            raise Refused(f"{recipe.path.name}: not one `source: {plan['debian_tar'][0]}` line")
        edit(at[0], *plan["debian_tar"][:2])
    if not all(done):
        raise Refused(f"{recipe.path.name}: a value to change is not on one line of its own; bump it by hand")
    return "".join(lines)


def expected(recipe, plan, changes):
    """The recipe's validated fields as they must load after the edit."""
    data = copy.deepcopy(recipe.data)
    data["version"] = plan["version"]
    if (data.get("purl") or "").endswith(f"@{recipe.version}"):
        data["purl"] = new_purl(data["purl"], recipe.version, plan["version"])
    for (i, j), new in changes.items():
        spot = data["sources"][i] if j == 0 else data["sources"][i]["alternatives"][j - 1]
        spot.update(file=new.file, sha256=new.sha256, urls=list(new.urls), inner=new.inner)
    if plan["debian_tar"]:
        data["debian_patches"]["source"] = plan["debian_tar"][1]
    return data


def new_purl(purl, old, new):
    return purl[:-len(old)] + new


def swap_version(text, old, new):
    """`text` with the version `old` (not inside a longer number) replaced; Refused if absent."""
    out, n = re.subn(r"(?<![0-9.])" + re.escape(old) + r"(?!\.?[0-9])", lambda m: new, text)
    if not n:
        raise Refused(f"{text} does not carry the version {old}")
    return out


def new_sources(recipe, plan):
    """{(source, alternative): new Alternative} and [alternatives to confirm upstream]."""
    src, out, confirm = recipe.sources[0], {}, []
    if "pypi" in plan:
        old_file, file, sha, url = plan["pypi"]
        anchor = next(j for j, a in enumerate(src.alternatives) if a.file == old_file)
        urls = lambda a: tuple(url if PYPI_HOST in u else swap_version(u, recipe.version, plan["version"])  # noqa: E731
                               for u in a.urls)
    else:
        file, sha, where = plan["orig"]
        anchor = next(j for j, a in enumerate(src.alternatives) if where in a.urls)
        urls = lambda a: a.urls                                                         # noqa: E731
    old = src.alternatives[anchor]
    if (old.file, old.sha256) != (file, sha):
        inner = old.inner and swap_version(old.inner, recipe.version, plan["version"])
        out[(0, anchor)] = Alternative(file, sha, urls(old), inner, old.fixup)
    for j, alt in enumerate(src.alternatives):
        if j == anchor or (0, anchor) not in out:
            continue
        if alt.sha256 != old.sha256 or plan["version"] == recipe.version:
            raise Refused(f"{alt.file} is pinned apart from {old.file}, and no sha256 is published "
                          f"for its {plan['version']} release: bump it by hand")
        if swap_version(old.file, recipe.version, plan["version"]) != file:
            raise Refused(f"{alt.file} was pinned byte-identical to {old.file}, but the new file is "
                          f"{file} (repacked?): bump it by hand")
        out[(0, j)] = Alternative(swap_version(alt.file, recipe.version, plan["version"]), sha,
                                  tuple(swap_version(u, recipe.version, plan["version"]) for u in alt.urls),
                                  alt.inner and swap_version(alt.inner, recipe.version, plan["version"]), alt.fixup)
        confirm.append((0, j))
    if plan["debian_tar"]:
        old_file, file, sha = plan["debian_tar"]
        i = next(i for i, s in enumerate(recipe.sources) if s.id == old_file)
        if old_file != file:
            prim = recipe.sources[i].primary
            out[(i, 0)] = Alternative(file, sha, prim.urls, prim.inner, prim.fixup)
    if not out:
        raise Refused("nothing to change: the files are those pinned already")
    return out, confirm


def owner_file(cfg, recipe):
    """The file holding the recipe's version and sources (the end of its inherit chain)."""
    name = recipe.name
    for _ in range(32):
        path = cfg.recipes_dir / f"{name}.yaml"
        raw = read_yaml(path)
        if "version" in raw or "sources" in raw:
            if not ("version" in raw and "sources" in raw):
                raise Refused(f"{path.name} holds only one of version and sources; bump it by hand")
            return path
        name = raw.get("inherit")
    raise Refused("no recipe file holds its version and sources")
