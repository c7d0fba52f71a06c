"""config.yaml: prefix root, distributions, mirrors, download and build settings.

Overrides without editing the tracked file (see docs/config.md):
  DAPPDEPS_CONFIG=path/to/other.yaml   use that file instead of ./config.yaml
  config.local.yaml next to it         merged on top (git-ignored)
  DAPPDEPS_OFFLINE=1                   same as download.offline: true
  DAPPDEPS_JOBS=N                      same as jobs: N
  DAPPDEPS_BUILDCACHE=off|read-only|read-write   buildcache.mode for one run
  DAPPDEPS_CACHE_DIR=path              same as cache_dir: path (relative: to the config's folder)
Every value that becomes a path, a name or a shell word is checked here, when loading
(tasks/model/schema.py has the rules; docs/config.md lists them).
"""
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from tasks.core.errors import UserError, cut
from tasks.model import platforms as platform_table
from tasks.model.configschema import CONFIG
from tasks.model.recipes import load_recipes, read_yaml
from tasks.model.schema import apply_environment, host_folder_problem, name_check, repository_check


@dataclass
class Distribution:
    name: str
    version: str
    prefix: str
    components: tuple            # recipe names, in build (topological) order
    uses: tuple                  # names of other distributions
    toolchain: str
    default: bool
    images: dict                 # image name -> {"repository", "include", "exclude", "strip"}
    description: str = ""
    runtime_image: str = ""      # the image mounted by users of distributions using this one
    setuid: tuple = ()           # paths allowed to keep setuid/setgid bits
    platforms: tuple = ()        # what it is built for (its own list, else the top level)


@dataclass
class Config:
    path: Path
    root: Path                   # folder relative paths are resolved against
    data: dict
    cache: Path
    recipes_dir: Path
    prefix_root: str
    jobs: int
    mirrors: tuple
    download: dict
    distributions: dict          # name -> Distribution, in dependency order
    recipes: dict                # name -> Recipe
    source_date_epoch: int
    sources: dict = field(default_factory=dict)  # source id -> Source
    buildroot_dir: Path = None   # where build roots live (buildroot.dir or cache/buildroot)
    native_platform: str = ""    # the build machine's (tasks/model/platforms.py)
    platform: str = ""           # the platform this view builds for; "": native
    cross: dict = field(default_factory=dict)   # target platform -> cross toolchain dist

    def component_order(self, dist):
        return self.distributions[dist].components

    # ---- platforms: a view of the configuration per target platform --------------------
    def for_platform(self, platform):
        """The configuration as the builds for `platform` see it: the same
        distributions and prefixes, their outputs in `<dist>@<arch>` folders when the
        platform is not the build machine's. The native platform's view is this object."""
        if platform_table.suffix(platform, self.native_platform) == "":
            return self
        # each recipe with its per_platform fields for it (tasks/model/recipes.py)
        recipes = {name: r.for_platform(platform) for name, r in self.recipes.items()}
        return dataclasses.replace(self, platform=platform, recipes=recipes)

    def tag(self, dist_name=None):
        """'' (native, or a cross toolchain: it runs on the build machine) or '@arm64'."""
        if dist_name is not None and dist_name in self.cross.values():
            return ""
        return platform_table.suffix(self.platform, self.native_platform)

    def label(self, dist_name):
        """The distribution as named in this view's folders and tasks: base, base@arm64."""
        return dist_name + self.tag(dist_name)

    def target(self):
        """The Platform (tasks/model/platforms.py) this view builds for."""
        return platform_table.PLATFORMS[self.platform or self.native_platform]

    # ---- where outputs live under cache/stage (spelled out here only) ------------------
    def stage_of(self, dist_name, component=None):
        """cache/stage/<dist>, or cache/stage/<dist>/<component>: a component's output
        (tree/, manifest.json, build.json, key.json written last). A foreign platform's:
        cache/stage/<dist>@<arch>/..."""
        folder = self.cache / "stage" / self.label(dist_name)
        return folder / component if component else folder

    def tree_of(self, dist_name, component):
        return self.stage_of(dist_name, component) / "tree"

    def assembled_manifest(self, dist_name):
        """The distribution's tree, path by path (assemble:<dist>)."""
        return self.cache / "stage" / f"{self.label(dist_name)}.manifest.json"

    def assembled_stamp(self, dist_name):
        return self.cache / "stage" / f"{self.label(dist_name)}.assembled.json"

    def closure(self, dist_name):
        """The distribution and every one it uses, transitively (itself first): what a
        check mounts next to it."""
        order = [dist_name]
        for name in order:
            for used in self.distributions[name].uses:
                if used not in order:
                    order.append(used)
        return order


def _deep_merge(base, over):
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def config_path(repo_root):
    env = os.environ.get("DAPPDEPS_CONFIG")
    if env and (not env.isprintable() or len(env) > 1000):
        raise UserError(f"'{cut(env)}' is not a file path (control characters or too long).",
                        field="DAPPDEPS_CONFIG (environment)")
    return Path(env).resolve() if env else Path(repo_root).resolve() / "config.yaml"


def _cache_folder(root, data, shown):
    return _checked_folder(root, data["cache_dir"], shown, "cache_dir")


def _checked_folder(root, value, shown, where):
    """A folder of the config joined with the config's folder: absolute, normalised,
    not the host's (it is wiped and rewritten as root)."""
    joined = os.path.normpath(os.path.join(root, value))
    resolved = str(Path(joined).resolve())
    for folder in dict.fromkeys((joined, resolved)):
        what = "cache" if where == "cache_dir" else "build root folder"
        problem = host_folder_problem(folder, f"dappdeps' {what} (it is wiped and rewritten as root)")
        if problem:
            raise UserError(problem, shown, where)
    return Path(resolved)


def load_config(repo_root="."):
    path = config_path(repo_root)
    if not path.is_file():
        raise UserError("the configuration file does not exist (or is not a regular file).",
                        path, hint="Run doit from the repository root, or set DAPPDEPS_CONFIG.")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise UserError("expected a configuration (key: value lines).", path)
    local = path.with_name("config.local.yaml")
    shown = path
    if local.is_file():
        over = read_yaml(local)
        if not isinstance(over, dict):
            raise UserError("expected key: value lines overriding config.yaml.", local)
        data = _deep_merge(data, over)
        shown = f"{path} (+ {local.name})"
    data = CONFIG.validate(data, shown)
    apply_environment(data)
    root = path.parent
    cache = _cache_folder(root, data, shown)
    native = platform_table.native() or "linux/amd64"
    recipes = {name: r.for_platform(native)
               for name, r in load_recipes(root / data["recipes_dir"]).items()}
    dists = _distributions(data, recipes, shown)
    cfg = Config(
        path=path, root=root, data=data, cache=cache,
        recipes_dir=(root / data["recipes_dir"]).resolve(), prefix_root=data["prefix_root"].rstrip("/"),
        jobs=data["jobs"], mirrors=tuple(data["mirrors"]), download=data["download"],
        distributions=dists, recipes=recipes, source_date_epoch=data["source_date_epoch"],
        native_platform=native, cross=dict(data["cross"]))
    _check_platforms(cfg, shown)
    cfg.sources = _sources(recipes, dists)
    cfg.buildroot_dir = (_checked_folder(root, data["buildroot"]["dir"], shown, "buildroot.dir")
                         if data["buildroot"]["dir"] else cache / "buildroot")
    return cfg


def find_cycle(graph):
    """Return one cycle of {node: [successors]} as a list ending where it starts, or None."""
    state = {}
    stack = []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def topological(graph):
    """Order nodes so that each comes after its successors (dependencies); stable by name."""
    order, seen = [], set()

    def visit(node):
        if node in seen:
            return
        seen.add(node)
        for dep in sorted(graph.get(node, ())):
            visit(dep)
        order.append(node)

    for node in graph:
        visit(node)
    return order


def _distributions(data, recipes, path):
    raw = data["distributions"]
    if not raw:
        raise UserError("is empty; define at least one distribution.", path, "distributions")
    for name, dist in raw.items():
        problem = name_check(name)
        if problem:
            raise UserError(problem, path, f"distributions.{name}")
        for i, used in enumerate(dist["uses"] + ([dist["toolchain"]] if dist["toolchain"] else [])):
            if used not in raw:
                raise UserError(f"'{used}' is not a distribution defined in this file "
                                f"(known: {', '.join(raw)}).", path, f"distributions.{name}.uses")
        if dist["toolchain"] and dist["toolchain"] not in dist["uses"]:
            dist["uses"].append(dist["toolchain"])
    cycle = find_cycle({n: d["uses"] for n, d in raw.items()})
    if cycle:
        raise UserError(f"distributions use each other in a cycle: {' -> '.join(cycle)}.", path,
                        "distributions.*.uses", "A distribution cannot need itself at build time.")
    out = {}
    for name in topological({n: d["uses"] for n, d in raw.items()}):
        out[name] = _distribution(name, raw[name], raw, recipes, data["prefix_root"], path,
                                  data["platforms"])
    return out


def _check_platforms(cfg, path):
    """Every foreign platform a distribution is built for has a cross toolchain, built
    for the build machine; every distribution it uses is built for that platform too."""
    native = cfg.native_platform
    for target, cross in cfg.cross.items():
        if cross not in cfg.distributions:
            raise UserError(f"'{cross}' is not a distribution defined in this file.", path,
                            f"cross.{target}")
        if cfg.distributions[cross].platforms != (native,):
            raise UserError(f"'{cross}' cross-compiles on this {native} machine, so it is "
                            f"built for {native} only (its platforms: "
                            f"{', '.join(cfg.distributions[cross].platforms)}).", path,
                            f"distributions.{cross}.platforms", f"Set its platforms: [{native}].")
    for name, dist in cfg.distributions.items():
        if native not in dist.platforms:
            raise UserError(f"builds '{name}' only for {', '.join(dist.platforms)}: for now "
                            f"every distribution is built for this machine's platform "
                            f"({native}) too (images, legal texts, verify and repro know only "
                            "it yet; docs/toolchain.md, Plan: arm64).", path,
                            f"distributions.{name}.platforms", f"Add {native} to the list.")
        for platform in dist.platforms:
            if platform == native:
                continue
            if platform not in cfg.cross:
                raise UserError(f"builds '{name}' for {platform}, which is not this machine's "
                                f"platform ({native}), and names no cross toolchain for it.",
                                path, f"distributions.{name}.platforms",
                                f"Add cross: {{{platform}: <distribution>}} (docs/config.md).")
            for used in dist.uses:
                if platform not in cfg.distributions[used].platforms:
                    raise UserError(f"'{name}' is built for {platform} and uses '{used}', "
                                    f"which is not (its platforms: "
                                    f"{', '.join(cfg.distributions[used].platforms)}).", path,
                                    f"distributions.{used}.platforms")
    _check_platform_images(cfg, path)


def _check_platform_images(cfg, path):
    """checks.platform_images names foreign platforms some distribution is built for."""
    built = sorted({p for d in cfg.distributions.values() for p in d.platforms
                    if p != cfg.native_platform})
    for platform in cfg.data["checks"]["platform_images"]:
        where = f"checks.platform_images.{platform}"
        if platform == cfg.native_platform:
            raise UserError(f"{platform} is this machine's platform: its base images are "
                            "checks.images.", path, where,
                            f"Move the list to checks.images, or remove {platform} here.")
        if platform not in built:
            raise UserError(f"no distribution is built for {platform} (foreign platforms "
                            f"built: {', '.join(built) or 'none'}), so no check-images task "
                            "would run these images.", path, where,
                            f"Add {platform} to platforms: (top level or a distribution's), "
                            "or remove this entry.")


def _visible_components(name, raw, seen=None):
    """Components of a distribution and of every distribution it uses, transitively."""
    seen = seen if seen is not None else set()
    if name in seen:
        return {}
    seen.add(name)
    found = {c: name for c in raw[name]["components"]}
    for used in raw[name]["uses"]:
        for comp, owner in _visible_components(used, raw, seen).items():
            found.setdefault(comp, owner)
    return found


def _distribution(name, dist, raw, recipes, prefix_root, path, raw_platforms):
    where = f"distributions.{name}.components"
    comps = dist["components"]
    if len(set(comps)) != len(comps):
        dup = next(c for c in comps if comps.count(c) > 1)
        raise UserError(f"'{dup}' is listed twice.", path, where)
    for i, comp in enumerate(comps):
        if comp not in recipes:
            raise UserError(f"'{comp}' has no recipe (expected recipes/{comp}.yaml).", path,
                            f"{where}[{i}]")
    visible = _visible_components(name, raw)
    graph = {}
    for comp in comps:
        recipe = recipes[comp]
        local = []
        for j, dep in enumerate(recipe.depends):
            if dep not in visible:
                raise UserError(f"depends on '{dep}', which is neither a component of "
                                f"distribution '{name}' nor of a distribution it uses.",
                                recipe.path, f"depends[{j}]",
                                f"Add '{dep}' to {where} in {path}, or fix the name.")
            if visible[dep] == name:
                local.append(dep)
        graph[comp] = local
    cycle = find_cycle(graph)
    if cycle:
        raise UserError(f"components depend on each other in a cycle: {' -> '.join(cycle)}.",
                        recipes[cycle[0]].path, "depends")
    images = {name: {"repository": dist["image"]["name"] or f"dappdeps/{name}",
                     "include": dist["image"]["include"], "exclude": dist["image"]["exclude"],
                     "strip": dist["image"]["strip"]}}
    for extra, spec in dist["images"].items():
        images[extra] = {"repository": spec["name"] or f"dappdeps/{extra}",
                         "include": spec["include"], "exclude": spec["exclude"],
                         "strip": spec["strip"]}
    for image, spec in images.items():
        if repository_check(spec["repository"]):
            raise UserError(repository_check(spec["repository"]), path,
                            f"distributions.{name}.image" + (f"s.{image}" if image != name else ""),
                            "Set its name: to a valid repository.")
    runtime = dist["runtime_image"] or name
    if runtime not in images:
        raise UserError(f"'{runtime}' is not an image of distribution '{name}' "
                        f"(its images: {', '.join(images)}).", path,
                        f"distributions.{name}.runtime_image")
    return Distribution(
        name=name, version=dist["version"], prefix=f"{prefix_root.rstrip('/')}/{name}/{dist['version']}",
        components=tuple(topological(graph)), uses=tuple(dist["uses"]), toolchain=dist["toolchain"],
        default=dist["default"], images=images, description=dist["description"],
        runtime_image=runtime, setuid=tuple(dist["setuid"]),
        platforms=tuple(dist["platforms"] or raw_platforms))


def _sources(recipes, dists):
    """Every source used by a distribution's component, by id; one file, one checksum."""
    # each recipe as each platform it is built for sees it (per_platform sources)
    used = {(c, p) for d in dists.values() for c in d.components for p in d.platforms or ("",)}
    by_file = {}
    out = {}
    for name, platform in sorted(used):
        recipe = recipes[name].for_platform(platform) if platform else recipes[name]
        for src in recipe.sources:
            for alt in src.alternatives:
                prev = by_file.get(alt.file)
                if prev and prev[0].sha256 != alt.sha256:
                    raise UserError(f"file {alt.file} has sha256 {alt.sha256}, but recipe "
                                    f"'{prev[1]}' pins it to {prev[0].sha256}.", recipe.path,
                                    "sources", "One file name, one content: fix one of them.")
                by_file[alt.file] = (alt, name)
            out.setdefault(src.id, src)
    return out
