"""The house rules of tasks/ (docs/architecture.md), checked on the real source tree:
imports only point down the wings, no import cycles, no private names borrowed from
another module, no module over ~400 lines."""
import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "tasks"
# lowest first: a module may import from its own wing and the wings before it
WINGS = ("core", "model", "sources", "build", "ship", "verify", "report", "stages", "nightly")
MAX_LINES = 420


def modules():
    for path in sorted(TASKS.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        yield name, path


def imports(path, name):
    """(imported module, [names], line) for every import in the file, at any depth."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            yield module, [a.name for a in node.names], node.lineno


def wing_of(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "tasks" else None


def test_every_module_lives_in_a_wing():
    stray = [name for name, _ in modules() if name != "tasks" and wing_of(name) not in WINGS]
    assert stray == [], f"modules outside the wings {WINGS}: {stray}"


def test_imports_point_down():
    wrong = []
    for name, path in modules():
        own = wing_of(name)
        if own is None:
            continue
        for module, _names, line in imports(path, name):
            target = wing_of(module)
            if target is None:
                continue
            if WINGS.index(target) > WINGS.index(own):
                wrong.append(f"{path.relative_to(REPO)}:{line} ({own}) imports {module} ({target})")
    assert wrong == [], "imports that point up:\n" + "\n".join(wrong)


def test_no_private_names_across_modules():
    wrong = []
    for name, path in modules():
        for module, names, line in imports(path, name):
            if module.startswith("tasks") and module != name:
                wrong += [f"{path.relative_to(REPO)}:{line} imports {module}.{n}"
                          for n in names if n.startswith("_")]
    assert wrong == [], "\n".join(wrong)


def test_no_import_cycles():
    known = {name for name, _ in modules()}
    graph = {}
    for name, path in modules():
        edges = set()
        for module, names, _line in imports(path, name):
            for candidate in [module] + [f"{module}.{n}" for n in names]:
                if candidate in known and candidate != name:
                    edges.add(candidate)
        graph[name] = edges
    state, cycle = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"
    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycle == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycle)


@pytest.mark.parametrize("name,path", [(n, p) for n, p in modules()], ids=lambda v: str(v))
def test_module_size(name, path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines; split it by job (docs/architecture.md)"


def test_the_check_can_fail(tmp_path):
    """The walker sees imports inside functions too (the way a cycle hides)."""
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from tasks.stages.build import tasks\n")
    assert [m for m, _n, _l in imports(src, "tasks.core.m")] == ["tasks.stages.build"]
