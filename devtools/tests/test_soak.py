"""The soak's judgements (growth, latency quantiles, its BENCHMARKS.md section), its
traffic against a stub server, and ``make soak --smoke`` (a drill)."""

import json
import os
import random
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devtools.soak import report
from devtools.soak.cli import arguments, load_summary, section_due
from devtools.soak.traffic import Traffic, status_class
from devtools.soak.verdict import JUDGED_SECONDS, Check, growth, growth_checks
from devtools.soak.watch import HEAD, LEGEND, buckets_since, histogram_buckets, quantile
from tests.helpers import ROOT, smoke_run

# Half an hour sampled every 10 s, as a full soak samples each process.
TIMES = [10.0 * n for n in range(181)]


def series(level, *, noise=2.0, seed=1):
    chance = random.Random(seed)
    return [(t, level(t) + chance.gauss(0, noise)) for t in TIMES]


def test_a_steady_leak_is_rising():
    # 36 MB over 30 minutes: 20 kB a second.
    leak = series(lambda t: 90 + 0.02 * t)

    assert growth(leak).rising


def test_a_slow_leak_above_the_tolerance_is_rising():
    # 30 MB over the run, 15 MB across its last half, in 3 MB of noise.
    leak = series(lambda t: 90 + 30 * t / 1800, noise=3.0)

    assert growth(leak).rising


@pytest.mark.parametrize("seed", range(20))
def test_a_flat_noisy_series_is_not_rising(seed):
    flat = series(lambda t: 95, noise=3.0, seed=seed)

    assert not growth(flat).rising


def test_warming_up_then_flat_is_not_rising():
    # Up 40 MB over the first five minutes (caches, pools, arenas), level after.
    warm = series(lambda t: 60 + 40 * min(t, 300) / 300)

    assert not growth(warm).rising


def test_a_one_off_step_late_in_the_run_is_not_rising():
    step = series(lambda t: 90 + (6 if t > 1500 else 0))

    assert not growth(step).rising


def test_a_short_run_is_not_judged_and_a_long_one_is():
    leak = series(lambda t: 90 + 0.02 * t)
    short = [(t, v) for t, v in leak if t <= 200]

    [judged] = growth_checks({"fanout": leak}, seconds=1800, unit="MB")
    [unjudged] = growth_checks({"fanout": short}, seconds=200, unit="MB")

    assert judged.ok is False
    assert judged.result == "FAILED"
    assert unjudged.ok is None
    assert unjudged.result == "not judged"
    assert JUDGED_SECONDS > 200


def test_a_process_replaced_late_is_not_judged_on_its_short_series():
    late = [(t, 90.0) for t in TIMES if t > 1200]

    [check] = growth_checks({"api-w3": late}, seconds=1800, unit="MB")

    assert check.ok is None


def test_the_lag_is_judged_with_its_own_tolerance():
    backlog = series(lambda t: 2 * t, noise=10)

    [rising] = growth_checks({"lag": backlog}, seconds=1800, unit="messages", tolerance=100)
    [steady] = growth_checks(
        {"lag": series(lambda t: 40, noise=30)}, seconds=1800, unit="messages", tolerance=100
    )

    assert (rising.ok, steady.ok) == (False, True)


METRICS = """\
# TYPE feed_post_to_feed_latency_seconds histogram
feed_post_to_feed_latency_seconds_bucket{le="0.1"} 50.0
feed_post_to_feed_latency_seconds_bucket{le="0.5"} 90.0
feed_post_to_feed_latency_seconds_bucket{le="1.0"} 100.0
feed_post_to_feed_latency_seconds_bucket{le="+Inf"} 100.0
feed_post_to_feed_latency_seconds_count 100.0
feed_fanout_batch_duration_seconds_bucket{le="0.1"} 7.0
"""


def test_histogram_buckets_are_read_from_prometheus_text():
    assert histogram_buckets(METRICS, "feed_post_to_feed_latency_seconds") == {
        0.1: 50.0,
        0.5: 90.0,
        1.0: 100.0,
        float("inf"): 100.0,
    }


def test_the_p99_of_a_minute_is_interpolated_from_two_scrapes():
    before = {0.1: 50.0, 0.5: 90.0, 1.0: 100.0, float("inf"): 100.0}
    after = {0.1: 60.0, 0.5: 190.0, 1.0: 200.0, float("inf"): 200.0}

    minute = buckets_since(after, before)

    # 100 observations in the minute: 10 below 0.1 s, 90 more below 0.5 s.
    assert minute[float("inf")] == 100
    assert quantile(minute, 0.99) == pytest.approx(0.1 + 0.4 * (99 - 10) / 90)
    assert quantile(minute, 0.05) == pytest.approx(0.05)


def test_quantiles_of_nothing_and_beyond_the_last_bucket():
    assert quantile({0.1: 0.0, float("inf"): 0.0}, 0.99) is None
    assert quantile({0.1: 0.0, float("inf"): 5.0}, 0.99) == float("inf")


def test_a_restarted_worker_counts_all_it_saw_since():
    before = {0.1: 500.0, float("inf"): 500.0}
    after = {0.1: 3.0, float("inf"): 4.0}

    assert buckets_since(after, before) == after


SECTION = f"{report.START}\n## Soak\n\nVerdict: passed.\n{report.END}"


def test_the_soak_section_is_appended_then_replaced_in_place():
    bench = "# Benchmarks\n\n| a | b |\n"

    once = report.section_put(bench, SECTION)
    again = report.section_put(once + "\n## Later\n", SECTION.replace("passed", "FAILED: x"))

    assert once == f"# Benchmarks\n\n| a | b |\n\n{SECTION}\n"
    assert report.section_of(again) == SECTION.replace("passed", "FAILED: x")
    assert again.startswith("# Benchmarks")
    assert again.endswith("\n## Later\n")


def test_a_new_benchmarks_file_keeps_the_old_soak_section():
    old = f"# Benchmarks\n\nold figures\n\n{SECTION}\n"

    assert report.soak_section_keep("# Benchmarks\n\nnew figures", old=old) == (
        f"# Benchmarks\n\nnew figures\n\n{SECTION}\n"
    )
    assert report.soak_section_keep("# Benchmarks\n\nnew", old="# Benchmarks\n") == "# Benchmarks\n\nnew"


def test_status_classes():
    assert [status_class("post", s) for s in (201, 200, 404, 409, 503, "ConnectionResetError")] == [
        "ok",
        "other",
        "4xx",
        "4xx",
        "5xx",
        "error",
    ]


class StubApi(BaseHTTPRequestHandler):
    """The API as the traffic sees it: every request succeeds. It notes each request
    (method, path, token, body) and the author of each post it made."""

    protocol_version = "HTTP/1.1"
    lock = threading.Lock()
    seen: list = []
    authors: dict = {}

    def _answer(self, status, body=None):
        payload = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _note(self):
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length)) if length else None
        with self.lock:
            self.seen.append((self.command, self.path, self.headers["Authorization"], body))
        return body

    def do_GET(self):
        self._note()
        self._answer(200, {"results": [], "next_cursor": None if "cursor" in self.path else "c1"})

    def do_POST(self):
        body = self._note()
        if self.path == "/posts":
            assert self.headers["Idempotency-Key"]
            with self.lock:
                post_id = len(self.authors) + 1
                self.authors[post_id] = self.headers["Authorization"]
            self._answer(201, {"id": post_id})
        else:
            self._answer(201, body)

    def do_DELETE(self):
        self._note()
        self._answer(204)

    def log_message(self, *args):
        pass


def test_the_traffic_sends_the_mix_on_schedule_as_requests_the_api_accepts():
    # Given a stub API, and three users who follow each other a little,
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    StubApi.seen, StubApi.authors = [], {}
    rates = {"post": 20, "read": 20, "read_next": 10, "follow": 10, "unfollow": 10, "delete": 10}
    traffic = Traffic(
        port=server.server_address[1],
        rates=rates,
        users={1: "t1", 2: "t2", 3: "t3"},
        follows={1: {2}, 2: {3}, 3: set()},
        candidates=[1, 2, 3, 4],
        weights=[1.0, 1.0, 1.0, 1.0],
        seed=1,
    )
    try:
        # when it runs for 2 seconds,
        traffic.start(2)
        traffic.wait()
        traffic.stop(grace=10)
    finally:
        server.shutdown()
    # then every request scheduled was sent (or had nothing to do yet) and succeeded;
    for kind, stats in traffic.stats.items():
        assert stats.done + stats.skipped == 2 * rates[kind], kind
        assert stats.dropped == 0
        assert all(status_class(kind, status) == "ok" for status in stats.statuses), (kind, stats.statuses)
    tokens = {"Token t1": 1, "Token t2": 2, "Token t3": 3}
    for _method, path, token, body in StubApi.seen:
        # each reader read their own feed, a later page by the cursor the last one gave,
        if path.startswith("/feeds/"):
            assert path.split("?")[0] == f"/feeds/{tokens[token]}"
            assert "?" not in path or path.endswith("?cursor=c1")
        # no one followed themselves,
        if path == "/follow":
            assert body["followee_id"] != tokens[token]
    # and each post deleted was deleted once, by its author.
    deleted = [
        (int(path.rsplit("/", 1)[1]), token) for _, path, token, _ in StubApi.seen if "/posts/" in path
    ]
    assert deleted
    assert len({post for post, _ in deleted}) == len(deleted)
    assert all(StubApi.authors[post] == token for post, token in deleted)
    assert traffic.thread_cpu > 0


@pytest.mark.parametrize(
    ("argv", "due"),
    [([], True), (["--seconds", "1800"], True), (["--seconds", "300"], False), (["--smoke"], False)],
)
def test_only_a_full_length_run_writes_its_section(argv, due, monkeypatch):
    monkeypatch.delenv("SOAK_SECONDS", raising=False)

    assert section_due(arguments(argv)) is due


def test_the_soak_script_parses_its_options():
    result = subprocess.run(
        [sys.executable, "scripts/soak.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    assert "--seconds" in result.stdout
    assert "--smoke" in result.stdout


# The checks a smoke run must pass whatever else the machine runs; the 5xx, the schedule
# and latency depend on the machine's load, the growth checks on a long run.
CORRECTNESS = [
    "feeds: a rebuild's dry run",
    "dead letters",
    "unexpected 4xx responses",
    "restarts",
    "outbox and fan-out drained after the traffic",
    "fan-out lag at the end",
]


@pytest.mark.drill
def test_the_soak_smoke_runs_the_stack_and_checks_every_feed():
    result = smoke_run(
        "soak.py",
        timeout=90,
        SOAK_DATABASE_URL="postgres://postgres@127.0.0.1:5432/feeds_soak_smoke",
        # The suite's own Redis database, which it empties around each test anyway.
        SOAK_REDIS_URL=os.environ["REDIS_URL"],
    )

    out = result.stdout
    assert "target: " in out, out[-3000:] + result.stderr[-3000:]
    rows = re.findall(r"^\| \d+:\d\d \| \d+ \| \d+ \| .* \|$", out, flags=re.MULTILINE)
    assert len(rows) >= 3, out[-3000:]
    checks = dict(re.findall(r"^\| ([^|]+?) \| .* \| (ok|FAILED|not judged) \|$", out, flags=re.MULTILINE))
    for name in CORRECTNESS:
        assert checks.get(name) == "ok", (name, out[-3000:])
    assert "| feeds: a rebuild's dry run | 0 missing, 0 extra |" in out
    passed = "soak passed" in out
    assert result.returncode == (0 if passed else 1), out[-3000:]
    assert passed == all(v != "FAILED" for v in checks.values())


def traffic_with(*, done: int, late: int, cpu_seconds: float) -> Traffic:
    traffic = Traffic(
        port=1, rates={"post": 1.0}, users={1: "t"}, follows={}, candidates=[1], weights=[1.0], seed=1
    )
    traffic.stats["post"].statuses[201] = done
    traffic.stats["post"].late = late
    traffic.thread_cpu = cpu_seconds
    return traffic


def test_a_load_that_kept_its_schedule_passes():
    line, check = load_summary(traffic_with(done=1000, late=5, cpu_seconds=30), seconds=100, busy=1.5)

    assert check.ok is True
    assert "0.30 cores on average (20% of the machine's busy CPU" in line
    assert "It kept up" in line


@pytest.mark.parametrize(("cpu_seconds", "blame"), [(95, "the load generator"), (20, "the server")])
def test_a_load_that_fell_behind_says_who_did(cpu_seconds, blame):
    line, check = load_summary(
        traffic_with(done=1000, late=50, cpu_seconds=cpu_seconds), seconds=100, busy=2.0
    )

    assert check.ok is False
    assert f"WARNING: the traffic fell behind its schedule, by {blame}" in line


def test_the_section_holds_the_table_and_the_checks_between_its_markers(tmp_path):
    checks = [Check("dead letters", "0", "0", True), Check("api not rising", "x", "y", None)]
    section = report.render(
        seconds=1800,
        workers=1,
        graph="a graph",
        settings={"FEED_MAX_ENTRIES": "1000000"},
        maximum={"rps": 400.0},
        target=200.0,
        mix="a mix",
        legend=LEGEND,
        head=HEAD,
        rows=["| 1:00 | 40 | 200 | ... |"],
        traffic=["| request | ... |"],
        load="Load generator: ...",
        checks=checks,
        verdict="passed",
    )
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n")

    report.section_write(section, path=path)

    assert report.section_of(path.read_text()) == section
    assert f"{HEAD}\n| 1:00 | 40 | 200 | ... |\n" in section
    assert "30 minutes of traffic at 200 requests/s, half the maximum post rate of 400/s" in section
    assert "| dead letters | 0 | 0 | ok |" in section
    assert "| api not rising | x | y | not judged |" in section
    assert section.endswith(f"Verdict: passed.\n{report.END}")
