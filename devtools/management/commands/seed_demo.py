import functools
import os
import shlex
import time
from collections import Counter
from typing import Any

from confluent_kafka import KafkaException
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from rest_framework.authtoken.models import Token
from tqdm import tqdm

from core.arguments import whole_number
from devtools.demo import DemoPlan, DemoResult, demo_plan, demo_seed, fanout_wait, outbox_wait
from eventbus.topics import broker_ping


def api_url_default() -> str:
    """Where ``make run`` serves the API: gunicorn's HOST and PORT (feedsite/gunicorn.conf.py),
    as the environment or .env sets them, with an any-address bind reached on 127.0.0.1."""
    host = os.environ.get("HOST") or "127.0.0.1"
    if host in {"0.0.0.0", "::"}:
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{os.environ.get('PORT', '8000')}"


class Command(BaseCommand):
    help = (
        "Fill the system with demo users, a power-law follow graph and posts. Posts go "
        "through the real event path, so the running fan-out worker fills the feeds. "
        "Idempotent: the same options and --seed write nothing the second time."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--users", type=whole_number(2), default=1000, help="accounts (default 1000)")
        parser.add_argument(
            "--avg-follows",
            type=whole_number(0),
            default=20,
            help="accounts each user follows on average (default 20)",
        )
        parser.add_argument(
            "--posts", type=whole_number(0), default=2000, help="posts to create (default 2000)"
        )
        parser.add_argument(
            "--celebrities",
            type=whole_number(0),
            default=3,
            help="accounts followed by a large share of all users (default 3)",
        )
        parser.add_argument("--seed", type=whole_number(0), default=1, help="names the data set (default 1)")
        parser.add_argument(
            "--password",
            default="demo-passphrase",
            help="password of every demo account (default demo-passphrase)",
        )
        parser.add_argument(
            "--wait",
            type=whole_number(0),
            default=120,
            help="seconds to wait for the fan-out worker to apply the posts; 0 does not wait (default 120)",
        )
        parser.add_argument(
            "--api-url",
            default=api_url_default(),
            help="API address used in the printed commands (default: where make run serves it, "
            "from HOST and PORT)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        try:
            plan = demo_plan(
                users=options["users"],
                avg_follows=options["avg_follows"],
                posts=options["posts"],
                celebrities=options["celebrities"],
                seed=options["seed"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        try:
            broker_ping()
        except KafkaException as exc:
            raise CommandError(
                f"no Kafka broker answers at {settings.KAFKA_BOOTSTRAP_SERVERS} ({exc}): start the "
                "system first (make run)"
            ) from None
        planned = time.monotonic() - started
        # Bars on a terminal only; plain summary lines go to stdout either way.
        progress = functools.partial(tqdm, disable=None, leave=False, file=self.stderr._out)
        result = demo_seed(plan, password=options["password"], progress=progress)
        seconds = {"plan": planned, **result.seconds}
        degrees = Counter(followee for _, followee in plan.follows)
        self.stdout.write(
            f"users: {len(plan.usernames)} ({result.users_created} new), "
            f"tokens: {result.tokens_created} new, "
            f"follows: {len(plan.follows)} ({result.follows_created} new, "
            f"{len(plan.follows) / len(plan.usernames):.1f} per user, "
            f"most followed: {degrees.most_common(1)[0][1] if degrees else 0}), "
            f"posts: {len(plan.posts)} ({result.posts_created} new)"
        )
        if options["wait"]:
            waited = time.monotonic()
            unsent = outbox_wait(timeout=options["wait"], progress=progress)
            if unsent:
                raise CommandError(
                    f"{unsent} events are not published after {options['wait']} s: is the outbox "
                    "relay running (make run, or manage.py run_outbox_relay)? The posts are saved; "
                    "their feeds fill once it runs."
                )
            left = fanout_wait(
                group_id=settings.FANOUT_GROUP_ID,
                timeout=max(options["wait"] - (time.monotonic() - waited), 1.0),
                progress=progress,
            )
            seconds["fan-out wait"] = time.monotonic() - waited
            if left:
                raise CommandError(
                    f"{left} events are not applied after {options['wait']} s: is the fan-out worker "
                    "running (make run, or manage.py run_fanout)? The posts are saved; their feeds "
                    "fill once it runs."
                )
            self.stdout.write("fan-out: every event applied; feeds are filled")
        self.stdout.write("seconds: " + ", ".join(f"{name} {value:.1f}" for name, value in seconds.items()))
        self._print_examples(plan, result, api=options["api_url"].rstrip("/"), password=options["password"])

    def _print_examples(self, plan: DemoPlan, result: DemoResult, *, api: str, password: str) -> None:
        following = Counter(follower for follower, _ in plan.follows)
        followers = Counter(followee for _, followee in plan.follows)
        # A busy reader, but not the one extreme account that follows nearly everyone.
        ranked = [user for user, _ in following.most_common()]
        reader = ranked[len(ranked) // 10] if ranked else 0
        famous = followers.most_common(1)[0][0] if followers else 1
        followed = {followee for follower, followee in plan.follows if follower == reader}
        newcomer = next(
            (i for i, _ in followers.most_common() if i != reader and i not in followed),
            next(i for i in range(len(plan.usernames)) if i != reader),
        )
        tokens = dict(
            Token.objects.filter(user_id__in=[result.user_ids[i] for i in (reader, famous)]).values_list(
                "user_id", "key"
            )
        )
        reader_id, famous_id = result.user_ids[reader], result.user_ids[famous]
        auth = {i: f"-H 'Authorization: Token {tokens[result.user_ids[i]]}'" for i in (reader, famous)}
        json = "-H 'Content-Type: application/json'"
        body = shlex.quote(f'{{"followee_id": {result.user_ids[newcomer]}}}')
        self.stdout.write(
            "\n".join(
                [
                    "",
                    f"Demo accounts are named {plan.usernames[0]} ... {plan.usernames[-1]}; "
                    f"each has the password {password!r}.",
                    f"In a browser, sign in at {api}/ as {plan.usernames[reader]} "
                    f"with the password {password!r}.",
                    "",
                    f"# The feed of {plan.usernames[reader]} (user {reader_id}, "
                    f"follows {following[reader]}):",
                    f"curl -s {auth[reader]} {api}/feeds/{reader_id}",
                    "# Its next page: pass the next_cursor of the answer as ?cursor=...",
                    f"# {plan.usernames[famous]} (user {famous_id}, {followers[famous]} followers) posts:",
                    f"curl -s -X POST {auth[famous]} {json} "
                    f'-d \'{{"content": "Hello from the demo"}}\' {api}/posts',
                    f"# {plan.usernames[reader]} follows {plan.usernames[newcomer]}:",
                    f"curl -s -X POST {auth[reader]} {json} -d {body} {api}/follow",
                    "# A token for any demo account:",
                    f'curl -s -X POST {json} -d \'{{"username": "{plan.usernames[-1]}", '
                    f'"password": "{password}"}}\' {api}/auth/token',
                    "# Posts and cache hits counted by the API, and rows written by the worker:",
                    f"curl -s {api}/metrics | grep -E '^feed_(posts_created|cache_hits|cache_misses)_total'",
                    *self._worker_metrics_example(),
                ]
            )
        )

    @staticmethod
    def _worker_metrics_example() -> list[str]:
        port = settings.FANOUT_METRICS_PORT
        if not port:
            return []
        return [f"curl -s http://127.0.0.1:{port}/metrics | grep -E '^feed_fanout_(rows|events)_total'"]
