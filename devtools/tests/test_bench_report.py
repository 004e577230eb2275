"""``make bench`` rewrites BENCHMARKS.md and keeps the soak's section in it."""

from devtools.bench import report
from devtools.soak.report import END, START

SOAK = f"{START}\n## Soak\n\nVerdict: passed.\n{END}"


def test_the_bench_rewrites_its_figures_and_keeps_the_soak_section(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report, "ROOT", tmp_path)
    monkeypatch.setattr(report, "RUN_DIR", tmp_path)
    (tmp_path / "BENCHMARKS.md").write_text(f"# Benchmarks\n\nold figures\n\n{SOAK}\n")

    report.report_write("# Benchmarks\n\nnew figures", results={"rps": 1}, smoke=False)

    assert (tmp_path / "BENCHMARKS.md").read_text() == f"# Benchmarks\n\nnew figures\n\n{SOAK}\n"
    assert "new figures" in capsys.readouterr().out


def test_without_a_soak_section_the_bench_writes_its_figures_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "ROOT", tmp_path)
    monkeypatch.setattr(report, "RUN_DIR", tmp_path)

    report.report_write("# Benchmarks\n\nnew figures", results={}, smoke=False)

    assert (tmp_path / "BENCHMARKS.md").read_text() == "# Benchmarks\n\nnew figures"
