"""The API under gunicorn with several workers reports metrics summed over all of them."""

import re
import subprocess
import sys

import pytest
import requests

from feedsite.testing import ROOT, free_port, stop_process, subprocess_env, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

REQUESTS = 40
HEALTHZ = re.compile(
    r'^django_http_requests_total_by_view_transport_method_total\{method="GET",transport="http",'
    r'view="healthz"\} (\S+)$',
    re.MULTILINE,
)


@pytest.fixture
def gunicorn(kafka, tmp_path):
    port = free_port()
    metrics_dir = tmp_path / "prometheus"
    env = subprocess_env(
        kafka,
        PORT=str(port),
        GUNICORN_WORKERS="3",
        GUNICORN_THREADS="2",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "feedsite/gunicorn.conf.py")],
            env=env,
            cwd=ROOT,
            stdout=stream,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_for(up, timeout=30, what="gunicorn")
        yield base, metrics_dir
    finally:
        stop_process(process)


def test_metrics_sum_over_all_gunicorn_workers(gunicorn):
    base, metrics_dir = gunicorn
    before = float(HEALTHZ.search(requests.get(f"{base}/metrics", timeout=5).text).group(1))

    for _ in range(REQUESTS):
        # A new connection each time, so that the workers share the requests.
        assert requests.get(f"{base}/healthz", timeout=5, headers={"Connection": "close"}).ok

    after = float(HEALTHZ.search(requests.get(f"{base}/metrics", timeout=5).text).group(1))
    assert after - before == REQUESTS
    writers = {path.stem.rsplit("_", 1)[-1] for path in metrics_dir.glob("*.db")}
    assert len(writers) >= 2, "only one worker process wrote metrics"
