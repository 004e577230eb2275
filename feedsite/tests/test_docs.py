"""The documentation (README.md and docs/): linked, complete and consistent with the code."""

import re
import tomllib
from pathlib import Path
from urllib.parse import unquote

from feedsite.tests.test_architecture import import_edges, project_packages
from feedsite.tests.test_compose import settings_env_names

ROOT = Path(__file__).resolve().parent.parent.parent
README = (ROOT / "README.md").read_text()
ARCHITECTURE = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
DEVELOPMENT = (ROOT / "docs" / "DEVELOPMENT.md").read_text()
# The front door and the reference beside it: every link in them is checked.
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Links the check leaves alone: they point off the repository.
EXTERNAL = ("http://", "https://", "mailto:")

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
# [text](target) and ![alt](target), the text possibly wrapped over lines; an optional "title".
LINK = re.compile(r"!?\[([^\]]*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
# [label]: target, a reference definition.
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*<?(\S+?)>?(?:[ \t]|$)", flags=re.MULTILINE)
CODE_SPAN = re.compile(r"(`+)(?:(?!\n[ \t]*\n)[\s\S])*?\1")


def section(markdown: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    body = markdown.split(f"\n{heading}\n", 1)[1]
    return re.split(rf"^#{{1,{len(level)}}} ", body, maxsplit=1, flags=re.MULTILINE)[0]


def outside_code_blocks(markdown: str) -> list[str]:
    """The document's lines with those of fenced code blocks emptied, so line numbers hold."""
    lines, fence = [], ""
    for line in markdown.splitlines():
        opening = FENCE.match(line)
        if fence:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = ""
            lines.append("")
        elif opening:
            fence = opening.group(1)
            lines.append("")
        else:
            lines.append(line)
    return lines


def anchors(markdown: str) -> set[str]:
    """The #anchors GitHub gives a document's headings: the heading as rendered (a link is its
    text), lower-cased, punctuation removed, each space a hyphen; a repeat gets -1, -2, ..."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in outside_code_blocks(markdown):
        if heading := HEADING.match(line):
            text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1))
            slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(f"{slug}-{count}" if count else slug)
    return found


def links(markdown: str) -> list[tuple[int, str]]:
    """Each link target of a document with the line it starts on; code is not prose, so
    fenced blocks and code spans hold no links."""
    text = "\n".join(outside_code_blocks(markdown))
    text = CODE_SPAN.sub(lambda span: re.sub(r"[^\n]", " ", span.group()), text)
    found = [(match.start(), match.group(2)) for match in LINK.finditer(text)]
    found += [(match.start(1), match.group(1)) for match in REFERENCE.finditer(text)]
    return [(text.count("\n", 0, offset) + 1, target) for offset, target in sorted(found)]


def broken_links(document: Path, root: Path) -> list[str]:
    """What is wrong with each relative link of ``document``: a file that does not exist
    (or lies outside ``root``), or an #anchor no heading of the target gives."""
    problems = []
    for line, target in links(document.read_text()):
        if target.startswith(EXTERNAL):
            continue
        where = f"{document.relative_to(root)}:{line}: ({target})"
        name, _, anchor = target.partition("#")
        destination = (document.parent / unquote(name)).resolve() if name else document
        if not destination.is_relative_to(root.resolve()):
            problems.append(f"{where} points outside the repository")
        elif not destination.exists():
            problems.append(f"{where} names no file")
        elif anchor and (destination.is_dir() or destination.suffix != ".md"):
            problems.append(f"{where} has an anchor into a file that has no headings")
        elif anchor and anchor not in anchors(destination.read_text()):
            problems.append(f"{where} names no heading of {destination.name}")
    return problems


def test_every_relative_link_and_anchor_of_the_docs_resolves():
    assert [document.name for document in DOCUMENTS] == [
        "README.md",
        "API.md",
        "ARCHITECTURE.md",
        "CONFIGURATION.md",
        "DEVELOPMENT.md",
        "OPERATING.md",
    ]
    checked = [target for document in DOCUMENTS for _, target in links(document.read_text())]
    assert sum(not target.startswith(EXTERNAL) for target in checked) > 30
    assert sum("#" in target for target in checked) > 15

    broken = [problem for document in DOCUMENTS for problem in broken_links(document, ROOT)]
    assert not broken, "\n".join(broken)


def test_the_link_check_reports_a_missing_file_anchor_or_section(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "GUIDE.md").write_text(
        "# Guide\n\n## Two words\n\n## Two words\n\n## The `.env` file, and more!\n\n"
        "```sh\n# not a heading\n```\n\n[home](../README.md#readme) [up](../../outside.md)\n"
    )
    (tmp_path / "README.md").write_text(
        "# Readme\n\n"
        "[guide](docs/GUIDE.md), [first](docs/GUIDE.md#two-words), [second](docs/GUIDE.md#two-words-1),\n"
        "[code](docs/GUIDE.md#the-env-file-and-more), [self](#readme), [dir](docs) ![pic](docs/GUIDE.md)\n"
        "[web](https://example.com/nowhere.md#none) [mail](mailto:someone@example.com)\n"
        "`[in code](code-span.md)`\n\n```\n[in a block](block.md)\n```\n\n"
        "[gone](docs/GONE.md) and [third](docs/GUIDE.md#two-words-2), [a\nwrapped one](#nowhere),\n"
        "[commented](docs/GUIDE.md#not-a-heading) [no headings](docs#x)\n\n[ref]: docs/ALSO_GONE.md\n"
    )

    assert broken_links(tmp_path / "README.md", tmp_path) == [
        "README.md:12: (docs/GONE.md) names no file",
        "README.md:12: (docs/GUIDE.md#two-words-2) names no heading of GUIDE.md",
        "README.md:12: (#nowhere) names no heading of README.md",
        "README.md:14: (docs/GUIDE.md#not-a-heading) names no heading of GUIDE.md",
        "README.md:14: (docs#x) has an anchor into a file that has no headings",
        "README.md:16: (docs/ALSO_GONE.md) names no file",
    ]
    assert broken_links(tmp_path / "docs" / "GUIDE.md", tmp_path) == [
        "docs/GUIDE.md:13: (../../outside.md) points outside the repository"
    ]


def test_the_readme_is_a_front_door_that_links_every_document():
    """About 250 lines at most: the reference lives in docs/, each page linked from here."""
    assert len(README.splitlines()) <= 250
    assert "A first session:\n\n```sh\n" in README
    assert re.search(r"^make run +# ", README, flags=re.MULTILINE), "the two commands"
    assert re.search(r"^make test +# ", README, flags=re.MULTILINE), "the two commands"
    linked = {target.partition("#")[0] for _, target in links(README)}
    unlinked = [document.name for document in DOCUMENTS[1:] if f"docs/{document.name}" not in linked]
    assert not unlinked, f"the README does not link {unlinked}"


def test_the_architecture_draws_each_path_as_mermaid():
    assert len(re.findall(r"^```mermaid$", ARCHITECTURE, flags=re.MULTILINE)) >= 4
    for section in (
        "write-path",
        "fan-out-path",
        "read-path",
        "failure-paths",
        "capacity-model",
    ):
        assert any(slug.startswith(section) for slug in anchors(ARCHITECTURE)), section


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
