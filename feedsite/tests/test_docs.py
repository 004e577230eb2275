"""The documentation (README.md and docs/): linked, complete and consistent with the code."""

import re
import tomllib
from pathlib import Path

from feedsite.tests.test_architecture import import_edges, project_packages
from feedsite.tests.test_compose import settings_env_names

ROOT = Path(__file__).resolve().parent.parent.parent
README = (ROOT / "README.md").read_text()
ARCHITECTURE = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
DEVELOPMENT = (ROOT / "docs" / "DEVELOPMENT.md").read_text()


def section(markdown: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    body = markdown.split(f"\n{heading}\n", 1)[1]
    return re.split(rf"^#{{1,{len(level)}}} ", body, maxsplit=1, flags=re.MULTILINE)[0]


def slugs(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_the_architecture_draws_each_path_as_mermaid():
    assert len(re.findall(r"^```mermaid$", ARCHITECTURE, flags=re.MULTILINE)) >= 4
    for section in (
        "write-path",
        "fan-out-path",
        "read-path",
        "failure-paths",
        "capacity-model-10-million-users-1000-posts",
    ):
        assert any(slug.startswith(section) for slug in slugs(ARCHITECTURE)), section


def test_every_setting_the_architecture_names_exists():
    table = ARCHITECTURE.split("## Settings that tune each path", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    assert len(named) > 20
    unknown = named - settings_env_names()
    assert not unknown, f"not settings: {sorted(unknown)}"


def test_the_capacity_model_quotes_the_measured_benchmarks():
    """Its inputs are the numbers BENCHMARKS.md holds, not made-up ones."""
    benchmarks = (ROOT / "BENCHMARKS.md").read_text()
    inputs = ARCHITECTURE.split("### Measured inputs", 1)[1].split("### Assumptions", 1)[0]
    for figure in re.findall(r"\b\d{1,3}(?:,\d{3})+(?= (?:rows|req)/s)", inputs):
        assert figure in benchmarks, figure


def test_the_apps_diagram_draws_exactly_the_arrows_of_the_code():
    apps = section(ARCHITECTURE, "## Apps and their arrows")
    [diagram] = re.findall(r"^```mermaid\n(.*?)^```$", apps, flags=re.MULTILINE | re.DOTALL)
    drawn = set(re.findall(r"^\s*(\w+)\s*-->\s*(\w+)\s*$", diagram, flags=re.MULTILINE))
    actual = set(import_edges())
    assert drawn == actual, f"not in the code: {sorted(drawn - actual)}; not drawn: {sorted(actual - drawn)}"


def test_the_code_layout_names_every_package():
    layout = section(DEVELOPMENT, "## Code layout")
    missing = {name for name in project_packages() if f"`{name}/`" not in layout}
    assert not missing, f"the code layout in docs/DEVELOPMENT.md does not name {sorted(missing)}"


def test_the_tests_section_explains_make_test_fast_and_every_marker():
    tests = section(DEVELOPMENT, "## Tests")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    markers = [line.split(":", 1)[0] for line in pyproject["tool"]["pytest"]["ini_options"]["markers"]]
    assert "make test-fast" in tests
    assert "## test-fast:" in (ROOT / "Makefile").read_text()
    unexplained = [name for name in markers if f"`{name}`" not in tests]
    assert not unexplained, f"markers docs/DEVELOPMENT.md's Tests section does not explain: {unexplained}"
