"""The durable-write ceiling: a WSGI app that answers every POST with one committed
transaction inserting a post row and an outbox row, and nothing else.

No framework, no ORM, no middleware: the token is looked up in a dict read from
BENCH_USERS_FILE, the JSON body parsed, the two rows inserted and committed (with the
server's synchronous_commit, as for a real post), and the new post returned. The tables
and the topic are named by the benchmark (BENCH_POSTS_TABLE, BENCH_OUTBOX_TABLE,
BENCH_TOPIC), so this file imports nothing of the project.
"""

import datetime
import json
import os
import threading
import uuid

import psycopg

_tokens = {}
if "BENCH_USERS_FILE" in os.environ:
    with open(os.environ["BENCH_USERS_FILE"]) as users:
        for line in users:
            user_id, token = line.split()
            _tokens[token] = int(user_id)
_posts = os.environ.get("BENCH_POSTS_TABLE", "posts_post")
_outbox = os.environ.get("BENCH_OUTBOX_TABLE", "consumers_outboxmessage")
_topic = os.environ.get("BENCH_TOPIC", "feed-events")
_local = threading.local()


def _connection() -> psycopg.Connection:
    # One connection per gunicorn thread, kept open as Django's persistent connections are;
    # autocommit, so that transaction() sends BEGIN and COMMIT as Django's atomic() does.
    if getattr(_local, "conn", None) is None or _local.conn.closed:
        _local.conn = psycopg.connect(os.environ["BENCH_DSN"], autocommit=True)
    return _local.conn


def _answer(start_response, status: str, body: bytes):
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    if environ["REQUEST_METHOD"] != "POST":
        return _answer(start_response, "200 OK", b"{}")
    author = _tokens.get(environ.get("HTTP_AUTHORIZATION", "").removeprefix("Token "))
    if author is None:
        return _answer(start_response, "401 Unauthorized", b"{}")
    length = int(environ.get("CONTENT_LENGTH") or 0)
    content = json.loads(environ["wsgi.input"].read(length))["content"]
    now = datetime.datetime.now(datetime.UTC)
    conn = _connection()
    with conn.transaction():
        post_id = conn.execute(
            f"INSERT INTO {_posts} (author_id, content, created_at) VALUES (%s, %s, %s) RETURNING id",
            [author, content, now],
        ).fetchone()[0]
        event = {
            "event_id": str(uuid.uuid4()),
            "type": "post.created",
            "version": 1,
            "occurred_at": now.isoformat(),
            "payload": {"post_id": post_id, "author_id": author},
        }
        conn.execute(
            f"INSERT INTO {_outbox} (topic, key, value, headers, created_at) VALUES (%s, %s, %s, '[]', %s)",
            [_topic, str(author), json.dumps(event).encode(), now],
        )
    body = json.dumps({"id": post_id, "author": author, "content": content, "created_at": now.isoformat()})
    return _answer(start_response, "201 Created", body.encode())
