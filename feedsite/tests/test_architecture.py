"""The arrows between the apps: imports of the code that ships point one way, from the
composition root (feedsite) through the feature apps to the event bus and the shared
library (core), and nothing that ships imports the development tooling.

The graph is read from the source with ``ast``, not by importing it, so it holds every
import, including those inside functions. Test code and migrations are left out.
"""

import ast
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent

CORE = "core"
EVENT_BUS = "eventbus"
COMPOSITION_ROOT = "feedsite"
FEATURES = {"posts", "follows", "feeds", "consumers", "web", "streams"}
# The code that ships: the shared library, the apps and the composition root.
PRODUCTION = {CORE, EVENT_BUS, *FEATURES, COMPOSITION_ROOT}
DEVTOOLS = "devtools"
TEST_HELPERS = "tests"
# Development tooling (dev broker, demo data, process helpers) and the pytest helpers.
TOOLING = {DEVTOOLS, TEST_HELPERS}

Edges = dict[tuple[str, str], list[str]]


def project_packages(root: Path = ROOT) -> set[str]:
    """The top-level packages of the project: the nodes of the graph."""
    return {path.name for path in root.iterdir() if (path / "__init__.py").is_file()}


def is_test_code(relative: Path) -> bool:
    return "tests" in relative.parts or "migrations" in relative.parts or relative.name == "conftest.py"


def imported_modules(source: str) -> list[tuple[str, int]]:
    """The absolute modules ``source`` imports, with their line numbers."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
    return found


def import_edges(root: Path = ROOT) -> Edges:
    """Package -> package imports of the non-test code, each with where it happens."""
    packages = project_packages(root)
    edges: Edges = defaultdict(list)
    for package in sorted(packages):
        for path in sorted((root / package).rglob("*.py")):
            relative = path.relative_to(root)
            if is_test_code(relative):
                continue
            for module, line in imported_modules(path.read_text()):
                target = module.split(".")[0]
                if target in packages and target != package:
                    edges[(package, target)].append(f"{relative}:{line} imports {module}")
    return dict(edges)


def cycles(edges: Edges) -> list[list[str]]:
    """One cycle through each package that can reach itself, as a closed path."""
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in edges:
        graph[source].add(target)
    found = []
    for start in sorted(graph):
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            for target in sorted(graph[node]):
                if target == start:
                    found.append([*path, start])
                    stack = []
                    break
                if target not in seen:
                    seen.add(target)
                    stack.append((target, [*path, target]))
    return found


def offending(edges: Edges, wrong: Callable[[str, str], bool]) -> list[str]:
    """Where each import that ``wrong(source, target)`` rejects happens."""
    return [
        where
        for (source, target), places in sorted(edges.items())
        if wrong(source, target)
        for where in places
    ]


def test_every_package_is_placed_as_production_code_or_tooling():
    """A new top-level package must be given its place before its arrows can be checked."""
    assert project_packages() == PRODUCTION | TOOLING


def test_the_graph_finds_the_arrows_it_checks():
    edges = import_edges()
    assert (COMPOSITION_ROOT, "feeds") in edges
    assert ("feeds", "posts") in edges
    assert (EVENT_BUS, CORE) in edges


def test_the_imports_between_packages_have_no_cycle():
    edges = import_edges()
    found = cycles(edges)
    assert not found, "import cycles: " + "; ".join(
        " -> ".join(cycle) + f" ({edges[(cycle[0], cycle[1])][0]})" for cycle in found
    )


def test_nothing_imports_the_composition_root_and_nothing_that_ships_imports_the_tooling():
    def wrong(source: str, target: str) -> bool:
        return target in (COMPOSITION_ROOT, TEST_HELPERS) or (source in PRODUCTION and target == DEVTOOLS)

    bad = offending(import_edges(), wrong)
    assert not bad, "imports of feedsite, devtools or tests: " + "; ".join(bad)


def test_core_imports_no_other_package():
    bad = offending(import_edges(), lambda source, target: source == CORE)
    assert not bad, "core imports a project package: " + "; ".join(bad)


def test_the_event_bus_imports_only_core():
    bad = offending(import_edges(), lambda source, target: source == EVENT_BUS and target != CORE)
    assert not bad, "eventbus imports more than core: " + "; ".join(bad)
