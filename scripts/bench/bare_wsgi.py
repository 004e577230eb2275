"""The reference ceiling: a WSGI app that answers every request with one Redis GET.

The value is a real rendered feed page (BENCH_BARE_BODY names the file), so the ceiling
moves the same bytes as a cached feed read.
"""

import os
from pathlib import Path

import redis

_client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
_body = Path(os.environ["BENCH_BARE_BODY"]).read_bytes() if "BENCH_BARE_BODY" in os.environ else b"{}"
_client.set("bench:bare", _body)


def application(environ, start_response):
    body = _client.get("bench:bare")
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
