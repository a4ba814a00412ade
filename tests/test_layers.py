"""Import layering of hybrid_jax, read from the source with `ast` (nothing is imported).

The layers, bottom to top (docs/architecture.md); a module may import its own layer and those
below it, never one above:
    errors, registry, code_version  <-  models  <-  retrieval  <-  data  <-  evaluation  <-  config
    <-  train  <-  program start-up (cli, platform)  <-  study  <-  main, encode, export, compare,
    prepare_data
Nothing imports an entry point except entry points. Imports inside functions count for the layer
rules (a deferred import is still a dependency); only imports that run when the module is loaded
count for import cycles, and a cycle through deferred imports is reported too.
"""
import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

ENTRY_POINTS = ("hybrid_jax.main", "hybrid_jax.study", "hybrid_jax.compare",
                "hybrid_jax.encode", "hybrid_jax.export", "hybrid_jax.prepare_data")

LAYERS = (
    ("hybrid_jax.errors", "hybrid_jax.registry", "hybrid_jax.code_version"),
    ("hybrid_jax.models",),
    ("hybrid_jax.retrieval",),
    ("hybrid_jax.data",),
    ("hybrid_jax.evaluation",),
    ("hybrid_jax.config",),
    ("hybrid_jax.train",),
    ("hybrid_jax.cli", "hybrid_jax.platform"),
    ("hybrid_jax.study",),
    ("hybrid_jax.main", "hybrid_jax.encode", "hybrid_jax.export", "hybrid_jax.compare",
     "hybrid_jax.prepare_data"),
)

# (importer, imported) pairs that break a rule and are being fixed; the test fails once one is fixed
# so that the entry goes too.
KNOWN_VIOLATIONS: set = set()

# Import cycles (frozensets of modules) being fixed, kept to the same rule.
KNOWN_LOAD_TIME_CYCLES: set = set()
KNOWN_CYCLES_WITH_DEFERRED: set = set()


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def is_entry_point(module: str) -> bool:
    return any(within(module, e) for e in ENTRY_POINTS)


def layer_of(module: str):
    """Index of the module's layer in LAYERS (the package root is the bottom), or None."""
    if module == "hybrid_jax":
        return 0
    return next((i for i, layer in enumerate(LAYERS) for p in layer if within(module, p)), None)


def find_modules(root: pathlib.Path) -> dict:
    """dotted name -> (path, is_package) for every .py file under root/hybrid_jax."""
    modules = {}
    for path in sorted((root / "hybrid_jax").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def _targets(node, importer: str, is_package: bool, modules: dict) -> list:
    """The hybrid_jax modules an import statement names (a `from P import x` names P.x when that
    is a module, else P)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = importer.split(".") if is_package else importer.split(".")[:-1]
            package = package[:len(package) - node.level + 1]
            base = ".".join(package + ([node.module] if node.module else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                 for a in node.names]
    found = []
    for name in names:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in modules:
            found.append(name)
    return found


def import_graph(modules: dict) -> tuple[dict, dict]:
    """(every import, imports run at load time): importer -> set of imported hybrid_jax modules.

    Load-time edges also include the packages Python initialises on the way to an imported module
    (importing P.sub from outside P runs P/__init__.py first)."""
    every = {m: set() for m in modules}
    load_time = {m: set() for m in modules}

    def visit(importer, is_package, node, deferred):
        for child in ast.iter_child_nodes(node):
            child_deferred = deferred or _is_type_checking(child) or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in _targets(child, importer, is_package, modules):
                    every[importer].add(target)
                    if child_deferred:
                        continue
                    load_time[importer].add(target)
                    parts = target.split(".")
                    for i in range(1, len(parts)):
                        parent = ".".join(parts[:i])
                        if parent in modules and not within(importer, parent):
                            load_time[importer].add(parent)
            visit(importer, is_package, child, child_deferred)

    for module, (path, is_package) in modules.items():
        visit(module, is_package, ast.parse(path.read_text(), str(path)), False)
    return every, load_time


def cycles(graph: dict) -> set:
    """Strongly connected components with more than one module, or a module importing itself."""
    index, low, stack, on_stack, found = {}, {}, [], set(), set()

    def strongconnect(v):  # Tarjan; the module graph is shallow enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph[v]:
                found.add(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def violations(every: dict) -> set:
    found = set()
    for importer, targets in every.items():
        for target in targets:
            low, high = layer_of(importer), layer_of(target)
            if low is not None and high is not None and high > low:
                found.add((importer, target))
            if is_entry_point(target) and not is_entry_point(importer):
                found.add((importer, target))
    return found


@pytest.fixture(scope="module")
def graphs():
    return import_graph(find_modules(REPO))


def test_parser_sees_deferred_relative_and_type_checking_imports(tmp_path):
    pkg = tmp_path / "hybrid_jax"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("from hybrid_jax.models.a import f\n")
    (pkg / "models" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "if TYPE_CHECKING:\n    from hybrid_jax import errors\n"
        "def f():\n    import hybrid_jax.main\n")
    (pkg / "models" / "b.py").write_text("from hybrid_jax.models import a\n")
    (pkg / "main.py").write_text("from hybrid_jax.models import f\n")
    every, load_time = import_graph(find_modules(tmp_path))
    assert every["hybrid_jax.models.a"] == {"hybrid_jax.models.b", "hybrid_jax.errors",
                                            "hybrid_jax.main"}
    assert load_time["hybrid_jax.models.a"] == {"hybrid_jax.models.b"}
    assert load_time["hybrid_jax.main"] == {"hybrid_jax.models"}
    assert cycles(load_time) == {frozenset({"hybrid_jax.models.a", "hybrid_jax.models.b"})}
    assert cycles(every) == {frozenset({"hybrid_jax.models.a", "hybrid_jax.models.b",
                                        "hybrid_jax.main", "hybrid_jax.models"})}
    assert violations(every) == {("hybrid_jax.models.a", "hybrid_jax.main")}


def test_graph_covers_the_package(graphs):
    every, load_time = graphs
    assert "hybrid_jax.retrieval.search" in load_time["hybrid_jax.evaluation.scoring"]
    assert "hybrid_jax.evaluation.run" in every["hybrid_jax.evaluation.entry"]  # in a function
    assert "hybrid_jax.evaluation.run" not in load_time["hybrid_jax.evaluation.entry"]


def test_every_module_has_a_layer(graphs):
    every, _ = graphs
    assert [m for m in every if layer_of(m) is None] == [], "add the new package to LAYERS"


def test_layers(graphs):
    every, _ = graphs
    found = violations(every)
    assert found - KNOWN_VIOLATIONS == set(), "imports against the layering (see module docstring)"
    assert KNOWN_VIOLATIONS - found == set(), "fixed: remove these from KNOWN_VIOLATIONS"


def test_no_new_load_time_cycles(graphs):
    found = cycles(graphs[1])
    assert found - KNOWN_LOAD_TIME_CYCLES == set()
    assert KNOWN_LOAD_TIME_CYCLES - found == set(), "fixed: remove from KNOWN_LOAD_TIME_CYCLES"


def test_no_new_cycles_through_deferred_imports(graphs):
    # A function-level import that closes a cycle hides a dependency loop instead of removing it.
    found = cycles(graphs[0])
    assert found - KNOWN_CYCLES_WITH_DEFERRED == set()
    assert KNOWN_CYCLES_WITH_DEFERRED - found == set(), "fixed: remove from the known set"


# The opt-in CPU host tuning: the programs' start-up (cli and the entry points) may import it,
# nothing that trains, loads models or evaluates.
PLATFORM = "hybrid_jax.platform"
PLATFORM_IMPORTERS = ("hybrid_jax.main", "hybrid_jax.encode", "hybrid_jax.export",
                      "hybrid_jax.compare", "hybrid_jax.study.driver", "hybrid_jax.cli")


def test_only_program_start_up_imports_the_platform_tuning(graphs):
    every, _ = graphs
    found = {(importer, target) for importer, targets in every.items() for target in targets
             if within(target, PLATFORM) and not within(importer, PLATFORM)
             and importer not in PLATFORM_IMPORTERS}
    assert found == set(), "only program start-up may import hybrid_jax.platform"
