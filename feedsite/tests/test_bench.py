"""`make bench` at a tiny size: every step runs and the table comes out. Speed is not
asserted here; BENCHMARKS.md holds a real run."""

import re
import subprocess
import sys
import time

import pytest

from tests.helpers import smoke_run

pytestmark = pytest.mark.drill

ROWS = [
    "| bare WSGI + 1 Redis GET (read ceiling) |",
    "| GET /feeds/{id}, cached |",
    "| GET /feeds/{id}?limit=19, uncached |",
    "| bare durable write: post row + outbox row, one committed transaction (write ceiling) |",
    "| POST /posts, fan-out worker stopped (the API's own cost) |",
    "| POST /posts, fan-out worker running, ~50 followers per author |",
    "| POST /posts, worker running |",
    "| INSERT ... SELECT ... ON CONFLICT DO NOTHING (ceiling) |",
    "| one run_fanout process, burst of 200 posts |",
    "| the same burst in one process, INSERT ... SELECT (`feed_fanout_posts`), best of 2 |",
    "| the same burst in one process, bulk_create(ignore_conflicts=True), best of 2 |",
    "| post to feed via the API, ",
    "| peak RSS |",
    "| GET / (web timeline), signed in |",
]
# The CPU table has a row for every closed-loop and open-loop run, each with the server's
# processes, the load generator, the CPU per request and what bounded the run.
CPU_HEADER = (
    "| run | API | worker | relay | broker | PostgreSQL | Redis | server | load | other "
    "| µs/req | req/core-s | CPU-bound ratio | bound by |"
)
CPU_RUNS = [
    "bare WSGI + 1 Redis GET (read ceiling)",
    "GET /feeds/{id}, cached",
    "GET /feeds/{id}?limit=19, uncached",
    "bare durable write: post row + outbox row, one committed transaction (write ceiling)",
    "POST /posts, fan-out worker stopped (the API's own cost)",
    "POST /posts, fan-out worker running, ~50 followers per author",
    "GET /feeds/{id}, cached, open loop",
    "POST /posts, worker running, open loop",
]

# The write pipeline's targets, as the Targets table names them.
TARGETS = [
    "GET /feeds/{id} cached, of the read ceiling",
    "POST /posts, worker stopped, of the write ceiling",
    "POST /posts, worker running, of the write ceiling",
    "POST /posts, worker running: its backlog drained after the run",
    "POST /posts open loop at 70% of the worker-running maximum, p99",
    "post to feed, 100-follower author at 50% of the maximum, p99",
    "post to feed, 9,000-follower author, p99",
    "fan-out by one worker, of the INSERT ... SELECT ceiling",
]


def cpu_rows(table: str) -> dict[str, list[str]]:
    """The CPU table's rows by run name, as their cells."""
    section = table.split(CPU_HEADER, 1)[1].split("\n\n", 1)[0]
    rows = [line.strip("| ").split(" | ") for line in section.splitlines()[2:]]
    return {cells[0]: cells[1:] for cells in rows}


def test_the_benchmark_runs_every_step_and_prints_its_table():
    result = smoke_run(
        "bench.py",
        timeout=600,
        BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:5432/feeds_bench_smoke",
        BENCH_REDIS_URL="redis://127.0.0.1:6379/12",
    )

    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    for row in ROWS:
        assert row in table, f"missing {row!r} in\n{table}"
    assert "nan" not in table
    assert " 0 rows" not in table
    assert CPU_HEADER in table, f"no CPU table in\n{table}"
    runs = cpu_rows(table)
    assert sorted(runs) == sorted(CPU_RUNS), runs
    for name, cells in runs.items():
        api, *_, server, load, _other = (float(c) for c in cells[:9])
        assert api > 0, (name, cells)
        assert server >= api, (name, cells)
        assert load > 0, (name, cells)
        assert cells[-1] in {"load generator", "CPU (all cores busy)", "neither: waits"}, (name, cells)
    # The POST runs' backlog drain times are reported.
    assert "backlog drained" in table
    # Each of the targets is stated with what this run measured, met or not.
    targets = table.split("## Targets", 1)[-1].split("\n## ", 1)[0]
    for target in TARGETS:
        line = next((row for row in targets.splitlines() if row.startswith(f"| {target} |")), None)
        assert line is not None, f"no target {target!r} in\n{table}"
        assert line.rstrip(" |").endswith(("| met", "| not met")), line


def test_the_cpu_meter_counts_a_process_and_its_children_from_proc():
    from devtools.bench.cpu import CpuMeter, with_descendants

    # Given a process whose child burns 0.3 s of CPU, then both wait for stdin.
    script = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import sys, time\\nwhile time.process_time() < 0.3: pass\\nprint(flush=True)\\nsys.stdin.read()'],"
        " stdin=subprocess.PIPE, stdout=subprocess.PIPE)\n"
        "child.stdout.readline()\n"
        "print(flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        meter = CpuMeter({"tree": lambda: with_descendants(parent.pid), "none": lambda: []})
        # When the meter watches while the child works,
        meter.start()
        assert parent.stdout.readline() == "\n"
        cores = meter.stop()
        elapsed = time.monotonic() - meter.started
    finally:
        parent.kill()
        parent.wait(10)
    # Then the child's CPU counts for the tree (it started after the first sample, so all of
    # it), an empty group counts nothing, and the machine was at least as busy.
    assert cores["tree"] * elapsed >= 0.25, cores
    assert cores["none"] == 0
    assert cores["machine"] * elapsed >= 0.25, cores


def test_the_stream_benchmark_opens_its_streams_and_times_each_round():
    result = smoke_run(
        "bench_stream.py",
        timeout=300,
        BENCH_STREAM_DATABASE_URL="postgres://postgres@127.0.0.1:5432/feeds_bench_stream_smoke",
        BENCH_STREAM_REDIS_URL="redis://127.0.0.1:6379/12",
    )

    assert result.returncode == 0, result.stderr[-3000:]
    section = result.stdout.split("<!-- streams:start -->", 1)[1]
    assert "KiB per open stream" in section
    rounds = [line for line in section.splitlines() if re.match(r"^\| [0-9] \|", line)]
    assert len(rounds) == 5, section
    for row in rounds:
        # Every one of the 20 streams received every round's post.
        assert row.split(" | ")[1] == "20", row
