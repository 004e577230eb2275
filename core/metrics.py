"""Prometheus metrics of the API and the fan-out worker, defined once.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR makes every worker write its samples to shared
files, and ``/metrics`` reports the sum over all workers.
"""

from prometheus_client import Counter, Gauge, Histogram

POSTS_CREATED = Counter("feed_posts_created", "Posts created through the API.")

EVENTS_PUBLISHED = Counter("feed_events_published", "Events the broker acknowledged.", ["topic", "type"])
EVENTS_PUBLISH_FAILED = Counter(
    "feed_events_publish_failed", "Events that could not be delivered to the broker.", ["topic", "type"]
)

API_REQUESTS_SHED = Counter(
    "feed_api_requests_shed",
    "API requests answered 503 at once because no Django thread took it up in API_REQUEST_QUEUE_MS.",
)

FEED_CACHE_HITS = Counter("feed_cache_hits", "Feed reads answered from the Redis page cache.")
FEED_CACHE_MISSES = Counter("feed_cache_misses", "Cacheable feed reads that went to PostgreSQL.")

FANOUT_EVENTS = Counter("feed_fanout_events", "Events the fan-out worker applied.", ["type"])
FANOUT_ROWS = Counter(
    "feed_fanout_rows", "Feed entries added by fan-out (new ones only) and written by backfill on follow."
)
FANOUT_ROWS_SKIPPED = Counter(
    "feed_fanout_rows_skipped", "Feed entries fan-out did not write because the follower is not active."
)
FEED_VACUUMED = Counter(
    "feed_vacuumed_entries", "Stored entries of users inactive past FEED_ACTIVE_SECONDS, deleted."
)
FEED_TRIMMED = Counter("feed_trimmed_entries", "Feed entries deleted to keep feeds within FEED_MAX_ENTRIES.")
FANOUT_BATCH_DURATION = Histogram(
    "feed_fanout_batch_duration_seconds",
    "Time to apply one consumed batch, from decode to offset commit.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
POST_TO_FEED_LATENCY = Histogram(
    "feed_post_to_feed_latency_seconds",
    "From an event's occurred_at to the commit of its fan-out.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
DEAD_LETTERS = Counter("feed_dead_letters", "Messages sent to the dead-letter queue.", ["error"])

OUTBOX_RELAYED = Counter(
    "feed_outbox_relayed", "Outbox rows the relay published (the fast path missed them)."
)
OUTBOX_BACKLOG = Gauge(
    "feed_outbox_backlog", "Outbox rows not yet acknowledged by the broker.", multiprocess_mode="max"
)
OUTBOX_OLDEST_AGE = Gauge(
    "feed_outbox_oldest_age_seconds", "Age of the oldest unacknowledged outbox row.", multiprocess_mode="max"
)

FANOUT_REPROCESSED = Counter(
    "feed_fanout_reprocessed",
    "Messages fetched again after an earlier worker fetched them: already applied (skipped) "
    "or not yet applied (applied now).",
    ["reason"],
)
FANOUT_STALE_OFFSETS = Counter(
    "feed_fanout_stale_offsets",
    "Partitions whose stored offsets belonged to an earlier topic of the same name (deleted "
    "and created again), and were forgotten instead of skipping the new topic's events.",
)
FANOUT_RETRIES = Counter("feed_fanout_retries", "Batch or event retries, by reason.", ["reason"])
FANOUT_BREAKER_OPEN = Gauge(
    "feed_fanout_breaker_open",
    "1 once the dead-letter circuit breaker has stopped the worker.",
    multiprocess_mode="max",
)
CONSUMER_LAG = Gauge(
    "feed_fanout_consumer_lag",
    "Messages behind the end of each assigned partition.",
    ["topic", "partition"],
    multiprocess_mode="max",
)
FANOUT_PARTITION_STALLED = Gauge(
    "feed_fanout_partition_stalled_seconds",
    "Seconds an owned partition with messages left has handed out none, once past "
    "FANOUT_STALL_SECONDS and while not paused on purpose (else 0).",
    ["topic", "partition"],
    multiprocess_mode="max",
)
FANOUT_ASSIGNED_PARTITIONS = Gauge(
    "feed_fanout_assigned_partitions",
    "Partitions of the feed events topic this worker owns now.",
    multiprocess_mode="liveall",
)
DEPENDENCY_UP = Gauge(
    "feed_dependency_up",
    "1 if the last readiness check (/readyz) reached the dependency, else 0.",
    ["dependency"],
    multiprocess_mode="livemin",
)

# The stream process (streams.hub): one process, its own registry, served on STREAM_METRICS_PORT.
STREAMS_OPEN = Gauge("feed_streams_open", "Home-feed streams open in this stream process.")
STREAMS_REFUSED = Counter(
    "feed_streams_refused", "Streams refused: beyond a limit, or without the database.", ["reason"]
)
STREAMS_ENDED = Counter(
    "feed_streams_ended", "Streams ended by the server: revoked credentials, unread frames.", ["reason"]
)
STREAM_EVENTS_SENT = Counter("feed_stream_events_sent", "Events queued to open streams, by type.", ["event"])
STREAM_DELIVERY_LAG = Histogram(
    "feed_stream_delivery_lag_seconds",
    "Seconds from a post's commit to its event being queued to the open streams of its readers.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STREAM_SUBSCRIBED = Gauge(
    "feed_stream_channel_subscribed", "1 while the stream process is subscribed to its Redis channel."
)
