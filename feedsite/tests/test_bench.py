"""`make bench` at a tiny size: every step runs and the table comes out. Speed is not
asserted here; BENCHMARKS.md holds a real run."""

import os
import subprocess
import sys

import pytest

from feedsite.settings.test import TEST_ENV_DEFAULTS
from tests.helpers import ROOT

pytestmark = pytest.mark.drill

ROWS = [
    "| bare WSGI + 1 Redis GET (ceiling) |",
    "| GET /feeds/{id}, cached |",
    "| GET /feeds/{id}?limit=19, uncached |",
    "| POST /posts (outbox on) |",
    "| INSERT ... SELECT ... ON CONFLICT DO NOTHING (ceiling) |",
    "| one run_fanout process, burst of 200 posts |",
    "| post to feed via the API, ",
    "| peak RSS |",
]


def test_the_benchmark_runs_every_step_and_prints_its_table():
    env = {
        k: v for k, v in os.environ.items() if k not in TEST_ENV_DEFAULTS and k != "DJANGO_SETTINGS_MODULE"
    }
    env.update(
        BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:5432/feeds_bench_smoke",
        BENCH_REDIS_URL="redis://127.0.0.1:6379/12",
    )
    benchmarks = (ROOT / "BENCHMARKS.md").read_bytes() if (ROOT / "BENCHMARKS.md").exists() else None

    result = subprocess.run(
        [sys.executable, "scripts/bench.py", "--smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout
    for row in ROWS:
        assert row in table, f"missing {row!r} in\n{table}"
    assert "nan" not in table
    assert " 0 rows" not in table
    # A smoke run leaves the committed results alone.
    after = (ROOT / "BENCHMARKS.md").read_bytes() if (ROOT / "BENCHMARKS.md").exists() else None
    assert after == benchmarks
