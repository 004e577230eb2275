"""Blocks and mutes: a few in the graph for every run, and what a read costs a user at the
limit of each (BLOCK_LIMIT blocks and MUTE_LIMIT mutes) next to the same users with none."""

import time

from devtools.bench.common import log
from devtools.bench.fanout import Api, percentiles
from devtools.bench.run import Run

# Share of the active users who mute two of the accounts they follow, and who block two
# accounts they have no follow with: the few every graph has, which fan-out and reads check.
MUTING_SHARE = 0.02
BLOCKING_SHARE = 0.01
# Users given the maximum of both, and reads of each per page kind and phase.
READERS = 20
ROUNDS = 5


def relations_seed(run: Run) -> None:
    """A few blocks and mutes, written straight into their tables (no events: nothing is
    stored yet that they would change)."""
    from django.db import connection

    from feeds.models import FeedEntry
    from follows.models import Block, Follow, Mute
    from posts.models import Post

    follows: dict[int, list[int]] = {}
    for follower, followee in Follow.objects.values_list("follower_id", "followee_id"):
        follows.setdefault(follower, []).append(followee)
    active = [u for u in run.graph["active"] if u not in run.graph["stars"]]
    accounts = run.graph["active"]
    mutes, blocks = [], []
    for user in run.chance.sample(active, round(MUTING_SHARE * len(active))):
        followed = sorted(follows.get(user, []))
        mutes += [(user, target) for target in run.chance.sample(followed, min(2, len(followed)))]
    for user in run.chance.sample(active, round(BLOCKING_SHARE * len(active))):
        for target in run.chance.sample(accounts, 2):
            if target != user and target not in follows.get(user, []):
                blocks.append((user, target))
    with connection.cursor() as cursor:
        for model, pairs in [(Mute, mutes), (Block, blocks)]:
            cursor.execute(
                f"INSERT INTO {model._meta.db_table} (user_id, target_id, created_at)"
                " SELECT * , now() FROM unnest(%s::bigint[], %s::bigint[]) ON CONFLICT DO NOTHING",
                [[u for u, _ in pairs], [t for _, t in pairs]],
            )
        # A block ends the follows both ways.
        cursor.execute(
            f"DELETE FROM {Follow._meta.db_table} AS f USING {Block._meta.db_table} AS b"
            " WHERE (f.follower_id = b.user_id AND f.followee_id = b.target_id)"
            " OR (f.follower_id = b.target_id AND f.followee_id = b.user_id)"
        )
        # And the history's feed rows that they hide, as the worker would remove them.
        feeds, posts = FeedEntry._meta.db_table, Post._meta.db_table
        for model, user, author in [
            (Mute, "user_id", "target_id"),
            (Block, "user_id", "target_id"),
            (Block, "target_id", "user_id"),
        ]:
            cursor.execute(
                f"DELETE FROM {feeds} AS f USING {posts} AS p, {model._meta.db_table} AS h"
                f" WHERE f.user_id = h.{user} AND p.id = f.post_id AND p.author_id = h.{author}"
            )
    run.results["relations"] = {"mutes": len(mutes), "blocks": len(blocks)}
    log(f"{len(mutes)} mutes and {len(blocks)} blocks in the graph")


def measure_hiding(run: Run) -> None:
    """Uncached reads of READERS active users with stored feeds, by the API: the first
    page, and a page below their stored entries (pulled from history, one probe per
    followee); with none of their own blocks or mutes, then with the maximum of each
    (accounts made for it, with no follows, so that the pages hold the same posts), then
    with none again."""
    from django.conf import settings
    from django.db import connection
    from django.db.models import Count, Min

    from core.cursor import cursor_encode
    from feeds.models import FeedEntry
    from follows.models import Block, Mute

    count = 5 if run.args.smoke else READERS
    limit = {"blocks": settings.BLOCK_LIMIT, "mutes": settings.MUTE_LIMIT}
    if run.args.smoke:
        limit = {"blocks": 300, "mutes": 300}
    stars = set(run.graph["stars"])
    stored = (
        FeedEntry.objects.filter(user_id__in=run.graph["active"])
        .values("user_id")
        .annotate(n=Count("*"), oldest=Min("post_id"))
        .filter(n__gte=40)
        .order_by("user_id")
    )
    # Users with none of the graph's own blocks and mutes.
    taken = stars | set(Block.objects.values_list("user_id", flat=True))
    taken |= set(Mute.objects.values_list("user_id", flat=True))
    readers = [(row["user_id"], row["oldest"]) for row in stored if row["user_id"] not in taken][:count]
    api = Api(run.base)

    def reads() -> dict:
        first, history = [], []
        for _ in range(ROUNDS):
            for user_id, oldest in readers:
                first.append(_timed(api, run, user_id, "limit=19"))
                history.append(_timed(api, run, user_id, f"cursor={cursor_encode(oldest)}"))
        return {"first": percentiles(first), "history": percentiles(history), "reads": len(first)}

    log(
        f"reads of {len(readers)} users without blocks or mutes,"
        f" then with {limit['blocks']:,} + {limit['mutes']:,}"
    )
    results = {"readers": len(readers), "limits": limit, "none": reads()}
    with connection.cursor() as cursor:
        # Accounts of their own to block and mute, that follow no one and no one follows: the
        # readers' pages stay as they were.
        wanted = limit["blocks"] + limit["mutes"]
        cursor.execute(
            "INSERT INTO auth_user (password, username, is_superuser, first_name, last_name, email,"
            " is_staff, is_active, date_joined) SELECT '!', 'bench-hidden' || g, false, '', '', '',"
            " false, true, now() FROM generate_series(1, %s) AS g RETURNING id",
            [wanted],
        )
        targets = [user_id for (user_id,) in cursor.fetchall()]
        for user_id, _ in readers:
            chosen = run.chance.sample(targets, wanted)
            for model, part in [(Block, chosen[: limit["blocks"]]), (Mute, chosen[limit["blocks"] :])]:
                cursor.execute(
                    f"INSERT INTO {model._meta.db_table} (user_id, target_id, created_at)"
                    " SELECT %s, t, now() FROM unnest(%s::bigint[]) AS t",
                    [user_id, part],
                )
        cursor.execute(f"ANALYZE {Block._meta.db_table}")
        cursor.execute(f"ANALYZE {Mute._meta.db_table}")
    ids = [u for u, _ in readers]
    results["each"] = {
        "blocks": min(Block.objects.filter(user_id=u).count() for u in ids),
        "mutes": min(Mute.objects.filter(user_id=u).count() for u in ids),
    }
    results["max"] = reads()
    results["rows"] = {"blocks": Block.objects.count(), "mutes": Mute.objects.count()}
    with connection.cursor() as cursor:
        # Straight from the tables, as they were written: no events for the worker.
        for model in (Block, Mute):
            cursor.execute(f"DELETE FROM {model._meta.db_table} WHERE user_id = ANY(%s)", [ids])
    results["none_again"] = reads()
    run.results["hiding"] = results


def _timed(api: Api, run: Run, user_id: int, query: str) -> float:
    started = time.perf_counter()
    response = api.session.get(
        f"{api.base}/feeds/{user_id}?{query}",
        headers={"Authorization": f"Token {run.tokens[user_id]}"},
        timeout=10,
    )
    response.raise_for_status()
    return time.perf_counter() - started
