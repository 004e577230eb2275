"""Demo data: a power-law social graph whose posts travel the real event path.

``demo_plan`` draws everything from one seeded generator, so a seed always names the same
users, follows and posts. ``demo_seed`` writes users, tokens and follows in bulk, and
creates the posts through ``post_create``: each gets its outbox row and its Kafka event,
and the fan-out worker fills the feeds. What already exists is skipped, so a second run
with the same options writes nothing.
"""

import itertools
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from consumers.models import AppliedOffset
from devtools.seed import SILENT, Progress, follows_copy, posts_publish, tokens_ensure, users_ensure
from eventbus.models import OutboxMessage
from eventbus.topics import Topic, kafka_config
from posts.models import Post

# Pareto shape of how many accounts one user follows (mean shape / (shape - 1) = 3).
FOLLOWS_SHAPE = 1.5
# Zipf exponents: how strongly follows, and authorship, concentrate on popular accounts.
POPULARITY_EXPONENT = 1.0
ACTIVITY_EXPONENT = 0.8

WORDS = {
    "openers": [
        "Just shipped",
        "Thinking about",
        "Finally tried",
        "Hot take on",
        "Notes from a week with",
        "Can't stop reading about",
        "Quick thread on",
        "Loving",
        "Debugging",
        "Reviewing",
    ],
    "topics": [
        "event sourcing",
        "sourdough",
        "the new bike lane",
        "Postgres partitioning",
        "trail running",
        "a Kafka consumer group",
        "film photography",
        "the city library",
        "home espresso",
        "Django migrations",
        "birdwatching",
        "mechanical keyboards",
        "jazz records",
        "a weekend hackathon",
        "container gardening",
    ],
    "tails": [
        "and it was worth it.",
        "— more soon.",
        "Thoughts?",
        "10/10 would do again.",
        "Harder than it looks.",
        "Who else?",
        "Long story.",
        "",
    ],
    "tags": ["#til", "#weekend", "#python", "#coffee", "#outdoors", "#reading", "#music", ""],
}


@dataclass(frozen=True)
class DemoPlan:
    """Everything a seed stands for; users are referred to by their index in ``usernames``."""

    seed: int
    usernames: list[str]
    celebrities: int
    follows: list[tuple[int, int]]
    posts: list[tuple[int, str]]


@dataclass
class DemoResult:
    user_ids: list[int] = field(default_factory=list)
    users_created: int = 0
    tokens_created: int = 0
    follows_created: int = 0
    posts_created: int = 0
    # Seconds spent per phase, in order.
    seconds: dict[str, float] = field(default_factory=dict)


def demo_username(seed: int, index: int, *, celebrities: int) -> str:
    if index < celebrities:
        return f"demo{seed}_star{index + 1}"
    return f"demo{seed}_user{index - celebrities + 1}"


def _zipf_cumulative(count: int, exponent: float, *, offset: int = 1) -> list[float]:
    """Cumulative Zipf-Mandelbrot weights 1 / (rank + offset) ** exponent; a larger offset
    flattens the head."""
    return list(itertools.accumulate(1 / (rank + offset) ** exponent for rank in range(count)))


def demo_plan(*, users: int, avg_follows: int, posts: int, celebrities: int, seed: int) -> DemoPlan:
    """Draw the graph and the posts for ``seed``.

    Each of the ``celebrities`` is followed by a large share of all users (half for the
    first, less for each next). Every user follows a Pareto-distributed number of
    accounts around ``avg_follows``, picked by Zipf-weighted popularity, so a few accounts
    have many followers and most have few. Authorship is Zipf-distributed too.
    """
    if users < 2:
        raise ValueError("users must be at least 2")
    if not 0 <= celebrities < users:
        raise ValueError("celebrities must be fewer than users")
    if not 0 <= avg_follows < users:
        raise ValueError("avg_follows must be fewer than users")
    if posts < 0:
        raise ValueError("posts must not be negative")
    rng = random.Random(seed)
    usernames = [demo_username(seed, i, celebrities=celebrities) for i in range(users)]

    # Who is popular is independent of the index, except for the celebrities.
    regular = list(range(celebrities, users))
    rng.shuffle(regular)
    # An offset growing with the follows keeps the most popular regular accounts below
    # the celebrities.
    popularity = _zipf_cumulative(len(regular), POPULARITY_EXPONENT, offset=max(10, 2 * avg_follows))
    reach = [min(0.5 / (k + 1) ** 0.5, 0.9) for k in range(celebrities)]
    scale = avg_follows * (FOLLOWS_SHAPE - 1) / FOLLOWS_SHAPE
    follows: set[tuple[int, int]] = set()
    for follower in range(users):
        wanted = min(round(rng.paretovariate(FOLLOWS_SHAPE) * scale), users - 1) if avg_follows else 0
        chosen = {star for star, share in enumerate(reach) if star != follower and rng.random() < share}
        # Popular accounts come up again and again: draw until enough distinct ones.
        for _ in range(4):
            picks = wanted - len(chosen)
            if picks <= 0 or not regular:
                break
            chosen.update(rng.choices(regular, cum_weights=popularity, k=picks))
            chosen.discard(follower)
        follows.update((follower, followee) for followee in chosen)

    authors = list(range(users))
    rng.shuffle(authors)
    activity = _zipf_cumulative(users, ACTIVITY_EXPONENT)
    planned = []
    for author in rng.choices(authors, cum_weights=activity, k=posts):
        words = [rng.choice(WORDS[part]) for part in ("openers", "topics", "tails", "tags")]
        planned.append((author, " ".join(w for w in words if w)))
    return DemoPlan(
        seed=seed, usernames=usernames, celebrities=celebrities, follows=sorted(follows), posts=planned
    )


def demo_seed(plan: DemoPlan, *, password: str, progress: Progress = SILENT) -> DemoResult:
    """Write ``plan``: users, tokens and follows in bulk, posts through ``post_create``.

    ``progress`` wraps each phase's iterable (tqdm's signature). Events of new posts are
    handed to the producer as each chunk commits, and flushed before this returns.
    """
    result = DemoResult()
    started = time.monotonic()

    def phase(name: str) -> None:
        nonlocal started
        result.seconds[name] = time.monotonic() - started
        started = time.monotonic()

    result.user_ids, result.users_created = users_ensure(plan.usernames, password=password, progress=progress)
    _, result.tokens_created = tokens_ensure(result.user_ids)
    phase("accounts")

    pairs = [(result.user_ids[f], result.user_ids[e]) for f, e in plan.follows]
    result.follows_created = follows_copy(pairs, progress=progress)
    phase("follows")

    existing = Counter(Post.objects.filter(author_id__in=result.user_ids).values_list("author_id", "content"))
    todo = []
    for author, content in plan.posts:
        key = (result.user_ids[author], content)
        if existing[key]:
            existing[key] -= 1
        else:
            todo.append(key)
    result.posts_created = posts_publish(todo, progress=progress)
    phase("posts")
    return result


def _partition_ends(topic: str, *, group_id: str, timeout: float) -> dict[int, tuple[int, int]]:
    """Per partition of ``topic``: the offset of its oldest message and the offset after
    its newest. The latter is read from the newest message itself, because not every
    Kafka-compatible broker reports a high watermark that reaches it."""
    consumer = Consumer(
        kafka_config(**{"group.id": group_id, "enable.auto.commit": False, "enable.partition.eof": True})
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics[topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        ends = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)
            for p in metadata.partitions
        }
        consumer.assign([TopicPartition(topic, p, max(high - 1, low)) for p, (low, high) in ends.items()])
        pending, deadline = set(ends), time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.2):
                partition, error = message.partition(), message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(partition)
                elif error is None:
                    low, high = ends[partition]
                    ends[partition] = (low, max(high, message.offset() + 1))
    finally:
        consumer.close()
    return ends


def fanout_backlog(*, group_id: str, timeout: float = 10.0) -> tuple[int, int]:
    """(applied, published): messages of the events topic the fan-out group has applied
    to the database, counted from the oldest still on the broker, and how many there are.
    """
    topic = Topic.FEED_EVENTS.topic_name
    ends = _partition_ends(topic, group_id=group_id, timeout=timeout)
    applied_to = dict(
        AppliedOffset.objects.filter(consumer_group=group_id, topic=topic).values_list(
            "partition", "next_offset"
        )
    )
    applied = published = 0
    for partition, (low, end) in ends.items():
        published += end - low
        applied += min(max(applied_to.get(partition, low), low), end) - low
    return applied, published


def outbox_wait(*, timeout: float, progress: Progress = SILENT) -> int:
    """Wait until the outbox relay has published every stored event; return how many are
    still unsent at the deadline (0 when all are out)."""
    deadline = time.monotonic() + timeout
    unsent = OutboxMessage.objects.filter(sent_at__isnull=True)
    left = unsent.count()
    with progress(total=left, desc="publish", unit="event") as bar:
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            now_left = unsent.count()
            bar.update(left - now_left)
            left = now_left
    return left


def fanout_wait(*, group_id: str, timeout: float, progress: Progress = SILENT) -> int:
    """Wait until the fan-out group has applied every event published so far; return how
    many are still unapplied at the deadline (0 when caught up)."""
    deadline = time.monotonic() + timeout
    applied, published = fanout_backlog(group_id=group_id)
    with progress(total=published, initial=applied, desc="fan-out", unit="event") as bar:
        while applied < published and time.monotonic() < deadline:
            time.sleep(0.2)
            now_applied, _ = fanout_backlog(group_id=group_id)
            bar.update(now_applied - applied)
            applied = now_applied
    return published - applied
