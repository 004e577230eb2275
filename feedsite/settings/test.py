"""Settings for the test suite: the real services, isolated from development data."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-only-secret-key")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")

from .base import *  # noqa: F403
from .base import CACHES, env

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CACHES["default"]["KEY_PREFIX"] = "feedsite-test"
# The suite starts its own broker; its address replaces this at session start.
KAFKA_BOOTSTRAP_SERVERS = env.str("TEST_KAFKA_BOOTSTRAP_SERVERS", default="")
FEED_EVENTS_TOPIC = "test-feed-events"
FEED_EVENTS_DLQ_TOPIC = "test-feed-events.dlq"
FANOUT_GROUP_ID = "test-feed-fanout"
FANOUT_METRICS_PORT = 0
