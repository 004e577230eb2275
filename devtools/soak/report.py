"""The soak's section of BENCHMARKS.md, between its markers, which ``make bench`` keeps
when it rewrites the rest of the file (``devtools/bench/report.py``)."""

import datetime
import os
from pathlib import Path

from devtools.processes import ROOT

BENCHMARKS = ROOT / "BENCHMARKS.md"
START = "<!-- soak:start -->"
END = "<!-- soak:end -->"
# The sections other commands write (make soak, make bench-stream), which make bench keeps.
KEPT = ("soak", "streams")


def section_of(text: str, name: str = "soak") -> str | None:
    """A BENCHMARKS.md's section ``name`` (the soak's by default), its markers included;
    None if it has none."""
    start_mark, end_mark = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    start = text.find(start_mark)
    end = text.find(end_mark, start)
    if start < 0 or end < 0:
        return None
    return text[start : end + len(end_mark)]


def section_put(text: str, section: str, name: str = "soak") -> str:
    """``text`` with its section ``name`` replaced by ``section``, or ``section`` appended."""
    old = section_of(text, name)
    if old is not None:
        return text.replace(old, section, 1)
    return f"{text.rstrip()}\n\n{section}\n" if text.strip() else f"{section}\n"


def soak_section_keep(text: str, *, old: str) -> str:
    """A new BENCHMARKS.md, ``text``, with the soak's and the streams' sections of the
    ``old`` one, if any."""
    for name in KEPT:
        section = section_of(old, name)
        if section is not None:
            text = section_put(text, section, name)
    return text


def section_write(section: str, *, path: Path = BENCHMARKS, name: str = "soak") -> None:
    path.write_text(section_put(path.read_text() if path.exists() else "", section, name))


def render(
    *,
    seconds: float,
    workers: int,
    graph: str,
    settings: dict[str, str],
    maximum: dict,
    target: float,
    mix: str,
    legend: str,
    head: str,
    rows: list[str],
    traffic: list[str],
    load: str,
    checks: list,
    verdict: str,
) -> str:
    """The soak section: what ran, the per-minute table, the traffic and the checks."""
    return "\n".join(
        [
            START,
            "## Soak",
            "",
            f"`make soak` on {datetime.date.today().isoformat()}, {os.cpu_count()} CPUs: "
            f"{seconds / 60:.0f} minutes of traffic at {target:.0f} requests/s, half the maximum post "
            f"rate of {maximum['rps']:.0f}/s measured first (wrk, 32 connections, closed loop), with "
            f"{workers} fan-out worker{'s' if workers != 1 else ''}.",
            f"Graph: {graph}.",
            "Settings: " + ", ".join(f"`{k}={v}`" for k, v in settings.items()) + "; production otherwise.",
            f"Mix per second: {mix}.",
            "",
            "### Per minute",
            "",
            legend,
            "",
            head,
            *rows,
            "",
            "### Traffic",
            "",
            *traffic,
            "",
            load,
            "",
            "### Final checks",
            "",
            "| check | value | limit | result |",
            "|---|---|---|---|",
            *(f"| {c.name} | {c.value} | {c.limit} | {c.result} |" for c in checks),
            "",
            f"Verdict: {verdict}.",
            END,
        ]
    )
