"""Fail if a package's modules import each other in a cycle (run by `make lint`).

Why a script and not a PyPI tool: the rule is small (a graph of `import` statements and its
strongly connected components), and it must count imports that tools skip or configure away: one
under `if TYPE_CHECKING:` or inside a function is how a cycle gets "solved" without being
removed, so here it is an edge like any other. import-linter would need a contract file to say
the same, pydeps graphviz.

What counts as an edge: every `import` / `from ... import` anywhere in the module (module level,
guards, function bodies). Importing `a.b.c` also runs `a/__init__.py` and `a/b/__init__.py`, so
those are edges too. A function-level import is still fine for start-up cost (the CLI loads an
area only for its verbs): it just may not close a loop.

Layers: for a package listed in LAYERS, every module sits in one layer (longest prefix wins)
and may import only from its own layer or a lower one, so "lower layers never import upward"
(STYLE.md, docs/architecture.md) is checked, not hoped for. A module in no layer is an error
too: a new module is placed on purpose.

Usage: python tools/import_cycles.py [PACKAGE_DIR ...]   (default: statusd)
Exit 0 when there is no cycle and no upward import; 1 and one line per problem otherwise.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

# Lowest first. Prefixes are module names relative to the package ("" is the package itself).
LAYERS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "statusd": [
        (
            "foundation",  # no I/O of their own: configuration, names, rules, shapes
            (
                "",
                "errors",
                "settings",
                "settings_loader",
                "keys",
                "task_names",
                "lifecycle",
                "metrics",
                "logs",
                "tokens",
                "models",
                "selfwatch",
                "dev_secrets",
                "supervisor",
                "schema",  # the HTTP input/output models and the limits they share
            ),
        ),
        (
            "core",  # storage and the one state writer, and the pools they run on
            (
                "db",
                "redis_runtime",
                "state_cache",
                "liveness",
                "hearing",
                "alerting",
                "flaps",
                "silences",
                "registry",
                "transition_types",
                "transition_sql",
                "transition_outbox",
                "transitions",
                "runtime",
            ),
        ),
        (
            "areas",  # what statusd does: each may use the core and the other areas
            (
                "api",
                "ingest",
                "oncall",
                "sweeper",
                "sync",
                "simulate",
                "recovery",
                "app_keys",
                "availability",
                "retention",
            ),
        ),
        (
            "composition",  # wires listeners, builds apps and processes, runs tasks, the CLI
            (
                "wiring",
                "worker_runtime",
                "sweeper.tasks",
                "sweeper.beat_leader",
                "sync.tasks",
                "retention_tasks",
                "app",
                "serving",
                "cli",
            ),
        ),
    ]
}


def layer_of(package: str, module: str) -> int | None:
    """Index of `module`'s layer in LAYERS[package] (longest matching prefix), None if unplaced."""
    relative = module[len(package) + 1 :] if module != package else ""
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, (_, prefixes) in enumerate(LAYERS[package]):
        for prefix in prefixes:
            matches = relative == prefix or (prefix and relative.startswith(prefix + "."))
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def upward_imports(package: str, edges: dict[str, set[str]]) -> list[str]:
    """One line per module outside every layer and per import of a higher layer."""
    names = [name for name, _ in LAYERS[package]]
    problems: list[str] = []
    for module in sorted(edges):
        mine = layer_of(package, module)
        if mine is None:
            problems.append(f"{module}: in no layer (add it to LAYERS in tools/import_cycles.py)")
            continue
        for target in sorted(edges[module]):
            theirs = layer_of(package, target)
            if theirs is not None and theirs > mine:
                problems.append(
                    f"upward import: {module} ({names[mine]}) imports {target} ({names[theirs]})"
                )
    return problems


def module_name(root: Path, path: Path) -> str:
    """`root/x/y.py` -> `pkg.x.y`; `root/x/__init__.py` -> `pkg.x` (pkg = root's name)."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    """Every module of the package under `root`, by dotted name."""
    return {module_name(root, p): p for p in sorted(root.rglob("*.py"))}


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, wherever it sits (module level, a guard, a function body)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that importing `name` imports directly."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _import_nodes(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                drop = node.level - 1 if is_package else node.level
                anchor = anchor[: len(anchor) - drop] if drop else anchor
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            found.update(m for m in _with_parents(target) if m in known)
    found.discard(name)
    # A module's own parent packages are already running when it is imported: not an edge.
    return found - set(_with_parents(name))


def graph(root: Path) -> dict[str, set[str]]:
    mods = modules(root)
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(edges) + 100))
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def a_path(edges: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete loop inside a component, for the message: a -> b -> ... -> a."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges[v] & members):
            if w == start:
                loop = [start]
                while v != start:
                    loop.insert(1, v)
                    v = previous[v]
                return [*loop, start]
            if w not in previous:
                previous[w] = v
                queue.append(w)
    return component


def main(argv: list[str]) -> int:
    roots = [Path(a) for a in argv] or [Path("statusd")]
    failed = False
    for root in roots:
        edges = graph(root)
        for component in cycles(edges):
            failed = True
            print(
                f"import cycle ({len(component)} modules): " + " -> ".join(a_path(edges, component))
            )
        if root.name in LAYERS:
            for problem in upward_imports(root.name, edges):
                failed = True
                print(problem)
    if not failed:
        print(f"import cycles: 0, upward imports: 0 ({', '.join(str(r) for r in roots)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
