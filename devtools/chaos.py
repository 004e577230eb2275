"""A chaos run of the whole stack: ``make chaos``.

Runs its own broker, API, fan-out worker and outbox relay against a fresh database,
drives steady post traffic over HTTP, and meanwhile kills and restarts the worker,
freezes and resumes the broker, and restarts PostgreSQL. Then it waits for the system to
drain and compares the feed table with what the committed posts and follows demand.
Exits 1 if any feed entry is lost, duplicated or unexpected.
"""
# Django is set up by main() from the drill's own environment, so the modules that need
# it are imported inside the functions.

import argparse
import os
import random
import secrets
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

from devtools.processes import ROOT, free_port, restart_postgres
from devtools.stack import Stack, database_recreate, wait_http

RUN_DIR = ROOT / ".run" / "chaos"
# The report's columns: key and heading.
REPORT_COLUMNS = {
    "posts": "posts",
    "expected": "expected feed entries",
    "found": "found",
    "lost": "lost",
    "duplicated": "duplicated",
    "unexpected": "unexpected",
    "dead_letters": "dead letters",
}


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("CHAOS_SECONDS", "120")))
    parser.add_argument("--rate", type=float, default=20.0, help="posts per second")
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def chaos_env(*, bootstrap: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "feedsite.settings.base",
        # The drill's own configuration, whatever a developer's .env says.
        "DJANGO_ENV_FILE": "",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": os.environ.get(
            "CHAOS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/feeds_chaos"
        ),
        "REDIS_URL": os.environ.get("CHAOS_REDIS_URL", "redis://127.0.0.1:6379/14"),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PORT": str(port),
        "FANOUT_METRICS_PORT": "0",
        "OUTBOX_RELAY_METRICS_PORT": "0",
        "KAFKA_MESSAGE_TIMEOUT_MS": "5000",
        "FANOUT_SESSION_TIMEOUT_MS": "6000",
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        # The drill compares the whole feed table with what fan-out should write.
        "FEED_MAX_ENTRIES": "1000000",
        # The drill counts every post: no rate limit may refuse one.
        "THROTTLE_POSTS_RATE": "",
        "THROTTLE_SIGNUP_RATE": "",
        "THROTTLE_TOKEN_RATE": "",
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(argv)
    chance = random.Random(args.seed)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    bootstrap, port = f"127.0.0.1:{free_port()}", free_port()
    env = chaos_env(bootstrap=bootstrap, port=port)
    os.environ.update(env)

    import django

    django.setup()
    database_recreate(env)

    from devtools.broker import broker_start, broker_stop
    from eventbus.topics import topics_ensure

    broker = broker_start(bootstrap, log=RUN_DIR / "broker.log")
    topics_ensure()
    tokens = chaos_seed(args.users, chance)
    stack = Stack(env, RUN_DIR)
    for name in ("api", "fanout", "relay"):
        stack.start(name)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        statuses, actions = traffic_during(
            lambda: disrupt(stack, broker.pid, chance, seconds=args.seconds), port, tokens, args.rate
        )
        log(f"traffic stopped; responses: {dict(sorted(statuses.items()))}; actions: {dict(actions)}")
        drained = wait_drained(timeout=180)
        report = chaos_verify()
    finally:
        stack.stop_all()
        os.kill(broker.pid, signal.SIGCONT)
        broker_stop(broker)
    print(report_table(report))
    clean = drained and report["lost"] == report["duplicated"] == report["unexpected"] == 0
    log("clean" if clean else "NOT CLEAN" + ("" if drained else " (did not drain)"))
    return 0 if clean else 1


def chaos_seed(users: int, chance: random.Random) -> list[str]:
    """``users`` accounts following up to 10 others each; their token keys."""
    from devtools.seed import follows_copy, tokens_ensure, users_ensure

    ids, _ = users_ensure([f"chaos{i}" for i in range(users)], password=None)
    follows = follows_copy(
        (person, other) for person in ids for other in chance.sample(ids, 10) if other != person
    )
    keys, _ = tokens_ensure(ids)
    log(f"seeded {users} users and {follows} follows")
    return [keys[pk] for pk in ids]


def traffic_during(
    disruption: Callable[[], Counter], port: int, tokens: list[str], rate: float
) -> tuple[Counter, Counter]:
    """Post at ``rate`` per second from 4 threads while ``disruption()`` runs; return the
    responses' statuses (or exception names) counted, and what ``disruption`` returned."""
    statuses: Counter = Counter()
    stop = threading.Event()
    threads = [
        threading.Thread(target=drive, args=(port, tokens[i::4], rate / 4, stop, statuses), daemon=True)
        for i in range(4)
    ]
    for thread in threads:
        thread.start()
    try:
        actions = disruption()
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    return statuses, actions


def disrupt(stack: Stack, broker_pid: int, chance: random.Random, *, seconds: float) -> Counter:
    """Every 3 to 8 s for ``seconds``: kill and restart the worker, freeze the broker for
    3 to 8 s, or restart PostgreSQL."""
    actions: Counter = Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(chance.uniform(3, 8))
        action = chance.choice(["kill worker", "kill worker", "stop broker", "restart postgres"])
        actions[action] += 1
        log(action)
        if action == "kill worker":
            stack.kill("fanout")
            stack.start("fanout")
        elif action == "stop broker":
            os.kill(broker_pid, signal.SIGSTOP)
            time.sleep(chance.uniform(3, 8))
            os.kill(broker_pid, signal.SIGCONT)
        else:
            restart_postgres()
    return actions


def drive(port: int, tokens: list[str], rate: float, stop: threading.Event, statuses: Counter) -> None:
    import requests

    session = requests.Session()
    i = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            response = session.post(
                f"http://127.0.0.1:{port}/posts",
                json={"content": f"chaos post {i}"},
                headers={"Authorization": f"Token {tokens[i % len(tokens)]}"},
                timeout=10,
            )
            statuses[response.status_code] += 1
        except requests.RequestException as exc:
            statuses[type(exc).__name__] += 1
            session = requests.Session()
        i += 1
        stop.wait(max(0.0, 1 / rate - (time.monotonic() - started)))


def wait_drained(timeout: float) -> bool:
    """Wait until the outbox is empty and every committed post is in every feed it belongs to.

    (Watermark-based lag is not used: the development broker misreports high watermarks.)
    A post that never arrives is reported as lost once the deadline passes.
    """
    from django.db import connection

    from eventbus.models import OutboxMessage

    deadline = time.monotonic() + timeout
    unsent = lost = -1
    while time.monotonic() < deadline:
        try:
            connection.close_if_unusable_or_obsolete()
            unsent = OutboxMessage.objects.filter(sent_at__isnull=True).count()
            lost = chaos_verify()["lost"]
        except Exception as exc:  # PostgreSQL may still be coming back
            log(f"not drained yet: {exc}")
            connection.close()
        if unsent == 0 and lost == 0:
            log("drained")
            return True
        time.sleep(1)
    log(f"not drained after {timeout}s: unsent outbox rows={unsent}, missing feed entries={lost}")
    return False


def chaos_verify() -> dict[str, int]:
    """The feed table against what the committed posts and follows demand.

    A dry-run rebuild of every user's feed says it: the entries it would add are lost,
    the ones it would remove are unexpected. Duplicates are counted apart.
    """
    from django.contrib.auth import get_user_model

    from consumers.models import DeadLetter
    from feeds.models import FeedEntry
    from feeds.services import feeds_rebuild
    from posts.models import Post

    rebuild = feeds_rebuild(user_ids=get_user_model().objects.values_list("pk", flat=True), dry_run=True)
    found = FeedEntry.objects.count()
    return {
        "posts": Post.objects.count(),
        "expected": found + rebuild.added - rebuild.removed,
        "found": found,
        "lost": rebuild.added,
        "duplicated": found - FeedEntry.objects.values("user_id", "post_id").distinct().count(),
        "unexpected": rebuild.removed,
        "dead_letters": DeadLetter.objects.count(),
    }


def report_table(report: dict[str, int]) -> str:
    """The report as a markdown table between blank lines."""
    return "\n".join(
        [
            "",
            "| " + " | ".join(REPORT_COLUMNS.values()) + " |",
            "|" + "---|" * len(REPORT_COLUMNS),
            "| " + " | ".join(str(report[name]) for name in REPORT_COLUMNS) + " |",
            "",
        ]
    )
