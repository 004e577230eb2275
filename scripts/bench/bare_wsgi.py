"""The reference ceiling: a WSGI app that answers every request with one Redis GET."""

import os

import redis

_client = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
_client.set("bench:bare", b'{"results":[],"next_cursor":null}')


def application(environ, start_response):
    body = _client.get("bench:bare")
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
