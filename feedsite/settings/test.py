"""Settings for the test suite: the real services, kept apart from development data.

Defaults are set in the environment before ``base`` reads it, so that a process the
suite starts (``run_fanout``, gunicorn) can be given exactly the same configuration.
"""

import os

TEST_ENV_DEFAULTS = {
    "DJANGO_SECRET_KEY": "test-only-secret-key",
    "REDIS_URL": "redis://127.0.0.1:6379/15",
    "CACHE_KEY_PREFIX": "feedsite-test",
    "FANOUT_GROUP_ID": "test-feed-fanout",
    "FANOUT_METRICS_PORT": "0",
    "STREAM_METRICS_PORT": "0",
    "FANOUT_SESSION_TIMEOUT_MS": "6000",
    # The suite talks plain HTTP to the API and its servers.
    "DJANGO_SECURE_SSL_REDIRECT": "false",
    "LOG_FORMAT": "console",
    # Drills count exact feed tables; the trimming tests set their own bound.
    "FEED_MAX_ENTRIES": "1000000",
    # High enough never to trip by accident; the throttle tests set their own.
    "THROTTLE_POSTS_RATE": "100000/minute",
    "THROTTLE_SIGNUP_RATE": "100000/minute",
    "THROTTLE_TOKEN_RATE": "100000/minute",
    "THROTTLE_ACCOUNT_LOGIN_RATE": "100000/minute",
    "THROTTLE_ADMIN_LOGIN_RATE": "100000/minute",
    "THROTTLE_FOLLOW_RATE": "100000/minute",
    "THROTTLE_FEEDS_RATE": "100000/minute",
}
for _name, _value in TEST_ENV_DEFAULTS.items():
    os.environ.setdefault(_name, _value)
# A developer's .env (a page size, debug, a log format) must not change what the suite runs
# under, nor what the processes it starts read: they inherit this.
os.environ["DJANGO_ENV_FILE"] = ""

from .base import *  # noqa: E402, F403

WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
