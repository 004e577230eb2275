"""A chaos run of the whole stack: ``make chaos``.

Runs its own broker, API, fan-out worker and outbox relay against a fresh database,
drives steady post traffic over HTTP, and meanwhile kills and restarts the worker,
freezes and resumes the broker, and restarts PostgreSQL. Then it waits for the system to
drain and compares the feed table with what the committed posts and follows demand.
Exits 1 if any feed entry is lost, duplicated or unexpected.
"""

import argparse
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run" / "chaos"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from stack import Stack, database_recreate, wait_http  # noqa: E402

from devtools.processes import free_port, restart_postgres  # noqa: E402


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("CHAOS_SECONDS", "120")))
    parser.add_argument("--rate", type=float, default=20.0, help="posts per second")
    parser.add_argument("--users", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    chance = random.Random(args.seed)

    RUN_DIR.mkdir(parents=True, exist_ok=True)
    bootstrap = f"127.0.0.1:{free_port()}"
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "feedsite.settings.base",
        "DATABASE_URL": os.environ.get(
            "CHAOS_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/feeds_chaos"
        ),
        "REDIS_URL": os.environ.get("CHAOS_REDIS_URL", "redis://127.0.0.1:6379/14"),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "PORT": str(port),
        "FANOUT_METRICS_PORT": "0",
        "OUTBOX_RELAY_METRICS_PORT": "0",
        "OUTBOX_RELAY_GRACE_SECONDS": "2",
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
    os.environ.update(env)

    import django

    django.setup()

    database_recreate(env)

    from devtools.broker import broker_start, broker_stop
    from eventbus.topics import topics_ensure

    broker = broker_start(bootstrap, log=RUN_DIR / "broker.log")
    topics_ensure()
    tokens = seed(args.users, chance)
    stack = Stack(env, RUN_DIR)
    for name in ("api", "fanout", "relay"):
        stack.start(name)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        statuses: Counter = Counter()
        stop_traffic = threading.Event()
        traffic = [
            threading.Thread(
                target=drive, args=(port, tokens[i::4], args.rate / 4, stop_traffic, statuses), daemon=True
            )
            for i in range(4)
        ]
        for thread in traffic:
            thread.start()
        actions = Counter()
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            time.sleep(chance.uniform(3, 8))
            action = chance.choice(["kill worker", "kill worker", "stop broker", "restart postgres"])
            actions[action] += 1
            log(action)
            if action == "kill worker":
                stack.kill("fanout")
                stack.start("fanout")
            elif action == "stop broker":
                os.kill(broker.pid, signal.SIGSTOP)
                time.sleep(chance.uniform(3, 8))
                os.kill(broker.pid, signal.SIGCONT)
            else:
                restart_postgres()
        stop_traffic.set()
        for thread in traffic:
            thread.join(30)
        log(f"traffic stopped; responses: {dict(sorted(statuses.items()))}; actions: {dict(actions)}")
        drained = wait_drained(timeout=180)
        report = verify()
    finally:
        stack.stop_all()
        os.kill(broker.pid, signal.SIGCONT)
        broker_stop(broker)

    print()
    print("| posts | expected feed entries | found | lost | duplicated | unexpected | dead letters |")
    print("|---|---|---|---|---|---|---|")
    print(
        "| {posts} | {expected} | {found} | {lost} | {duplicated} | {unexpected} | {dead_letters} |".format(
            **report
        )
    )
    print()
    clean = drained and report["lost"] == report["duplicated"] == report["unexpected"] == 0
    log("clean" if clean else "NOT CLEAN" + ("" if drained else " (did not drain)"))
    return 0 if clean else 1


def seed(users: int, chance: random.Random) -> list[str]:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from follows.models import Follow

    people = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"chaos{i}") for i in range(users)]
    )
    Follow.objects.bulk_create(
        [
            Follow(follower=person, followee=other)
            for person in people
            for other in chance.sample(people, 10)
            if other != person
        ]
    )
    tokens = Token.objects.bulk_create([Token(user=person, key=Token.generate_key()) for person in people])
    log(f"seeded {users} users and {Follow.objects.count()} follows")
    return [t.key for t in tokens]


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
            lost = verify()["lost"]
        except Exception as exc:  # PostgreSQL may still be coming back
            log(f"not drained yet: {exc}")
            connection.close()
        if unsent == 0 and lost == 0:
            log("drained")
            return True
        time.sleep(1)
    log(f"not drained after {timeout}s: unsent outbox rows={unsent}, missing feed entries={lost}")
    return False


def verify() -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            """
            WITH expected AS (
                SELECT id AS post_id, author_id AS user_id FROM posts_post
                UNION
                SELECT p.id, f.follower_id
                FROM posts_post p JOIN follows_follow f ON f.followee_id = p.author_id
            )
            SELECT
                (SELECT count(*) FROM posts_post),
                (SELECT count(*) FROM expected),
                (SELECT count(*) FROM feeds_feedentry),
                (SELECT count(*) FROM expected e WHERE NOT EXISTS (
                    SELECT 1 FROM feeds_feedentry f WHERE f.user_id = e.user_id AND f.post_id = e.post_id)),
                (SELECT count(*) - count(DISTINCT (user_id, post_id)) FROM feeds_feedentry),
                (SELECT count(*) FROM feeds_feedentry f WHERE NOT EXISTS (
                    SELECT 1 FROM expected e WHERE f.user_id = e.user_id AND f.post_id = e.post_id)),
                (SELECT count(*) FROM consumers_deadletter)
            """
        )
        names = ["posts", "expected", "found", "lost", "duplicated", "unexpected", "dead_letters"]
        return dict(zip(names, cursor.fetchone(), strict=True))


if __name__ == "__main__":
    sys.exit(main())
