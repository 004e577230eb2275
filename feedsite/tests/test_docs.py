"""The operator documentation: linked, complete and consistent with the settings."""

import re
from pathlib import Path

from feedsite.tests.test_compose import settings_env_names

ROOT = Path(__file__).resolve().parent.parent.parent
README = (ROOT / "README.md").read_text()
ARCHITECTURE = (ROOT / "docs" / "ARCHITECTURE.md").read_text()


def slugs(markdown: str) -> set[str]:
    """GitHub's anchors of a document's headings."""
    headings = re.findall(r"^#+ (.+)$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_the_readme_links_the_operations_section_and_the_architecture():
    assert "(#operating-it)" in README
    assert "(docs/ARCHITECTURE.md)" in README
    assert "operating-it" in slugs(README)


def test_every_link_to_a_readme_section_resolves():
    for document, text in (("README.md", README), ("ARCHITECTURE.md", ARCHITECTURE)):
        anchors = set(re.findall(r"\(#([\w-]+)\)", text)) | set(re.findall(r"README\.md#([\w-]+)\)", text))
        assert anchors, document
        missing = anchors - slugs(README) if document == "ARCHITECTURE.md" else anchors - slugs(text)
        assert not missing, f"{document} links to missing sections: {sorted(missing)}"


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
