"""The benchmark's graph: users and their tokens, a power-law follow graph with two big
accounts, and a post history."""

import random

from devtools.bench.common import log, progress
from devtools.bench.run import Run

# Django is set up by cli.main() from the benchmark's own environment, so the modules that
# need it are imported inside the functions.


# The two big accounts: one above FANOUT_FOLLOWER_LIMIT active followers (merged at read
# time), one below; of their followers about 30% are active (readers.IDLE_SHARE).
CELEBRITY_FOLLOWERS = (20_000, 9_000)
FOLLOWER_LIMIT = 5_000

# The POST runs' authors have about this many followers each.
AUTHOR_FOLLOWERS = 50


def graph_seed(run: Run) -> None:
    """The run's graph, seeded in its database."""
    log(f"seeding {run.args.users} users, ~{run.args.avg_follows} follows each")
    run.graph = seed(
        users=run.args.users, avg_follows=run.args.avg_follows, posts_per_user=2, chance=run.chance
    )


def load_files_write(run: Run) -> None:
    """The users file wrk reads and the authors file of the POST runs."""
    active = run.graph["active"]
    run.users_file.write_text("".join(f"{u} {run.tokens[u]}\n" for u in active))
    # The active users whose follower counts are nearest AUTHOR_FOLLOWERS (the big accounts
    # are not among them), up to 500 of them, so that posts spread over many partitions.
    by_followers = run.graph["by_followers"]
    authors = sorted(active[2:], key=lambda u: (abs(by_followers.get(u, 0) - AUTHOR_FOLLOWERS), u))
    authors = authors[: max(20, min(500, len(active) // 10))]
    run.authors_file.write_text("".join(f"{u} {run.tokens[u]}\n" for u in authors))
    run.results.update(
        graph={k: run.graph[k] for k in ("accounts", "follows")},
        authors={
            "count": len(authors),
            "mean_followers": sum(by_followers.get(u, 0) for u in authors) / len(authors),
        },
    )


def follow_graph(
    ids: list[int], *, users: int, avg_follows: int, chance: random.Random
) -> set[tuple[int, int]]:
    """A power-law follow graph among the first ``users`` accounts of ``ids``, plus the big
    accounts' followers drawn from all of them."""
    active = ids[:users]
    stars = ids[: len(CELEBRITY_FOLLOWERS)]
    # Power law: a few accounts draw most follows (Zipf weights by rank), and follow counts
    # per user are Pareto-distributed around the average.
    candidates = active[len(stars) :]
    weights = [1 / (rank + 1) ** 0.9 for rank in range(len(candidates))]
    pairs: set[tuple[int, int]] = set()
    for follower in progress(active, desc="follows", unit="user"):
        count = min(
            int(chance.paretovariate(1.6) * avg_follows * 0.375), len(candidates) - 1, avg_follows * 20
        )
        for followee in chance.choices(candidates, weights=weights, k=max(count, 1)):
            if followee != follower:
                pairs.add((follower, followee))
    for star, followers in zip(stars, CELEBRITY_FOLLOWERS, strict=True):
        for follower in chance.sample([i for i in ids if i != star], min(followers, len(ids) - 1)):
            pairs.add((follower, star))
    return pairs


def seed(*, users: int, avg_follows: int, posts_per_user: int, chance: random.Random) -> dict:
    """Users, tokens, a power-law follow graph with two big accounts, and a post history."""
    from django.db import connection

    from devtools.seed import follows_copy, posts_history, tokens_ensure, users_ensure

    accounts = max(users, max(CELEBRITY_FOLLOWERS) + 1)
    ids, _ = users_ensure([f"bench{n}" for n in range(1, accounts + 1)], password="bench-password")
    tokens, _ = tokens_ensure(ids)
    pairs = follow_graph(ids, users=users, avg_follows=avg_follows, chance=chance)
    follows_copy(pairs, progress=progress)
    # A history to read: posts_per_user posts by every active user, old enough to be
    # history, fanned out with one INSERT ... SELECT (the ceiling ceilings.py measures).
    posts_history(ids[:users], per_author=posts_per_user)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {
        "accounts": accounts,
        "active": ids[:users],
        "stars": ids[: len(CELEBRITY_FOLLOWERS)],
        "follows": len(pairs),
        "by_followers": count_followers(),
        "tokens": tokens,
    }


def count_followers() -> dict[int, int]:
    from django.db.models import Count

    from follows.models import Follow

    return dict(Follow.objects.values("followee_id").annotate(n=Count("*")).values_list("followee_id", "n"))


def followers(user_id: int) -> list[int]:
    from follows.models import Follow

    return list(
        Follow.objects.filter(followee_id=user_id)
        .order_by("follower_id")
        .values_list("follower_id", flat=True)
    )
