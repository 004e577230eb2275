"""Settings for the feed system.

Every value comes from the environment (read here and nowhere else) with a default that
works against the local services. Production differs only by environment.
"""

import ipaddress
import re
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from core.envfile import env_file_read

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

# Local settings file (DJANGO_ENV_FILE): KEY=value lines that fill in what the environment
# does not set; make creates .env with a random DJANGO_SECRET_KEY and the values for plain
# HTTP on this machine. Empty reads none (the test settings). Default: .env at the repository root.
ENV_FILE = env_file_read()

# --- Core Django -------------------------------------------------------------------------

# Debug mode; never on in production. Default: false.
DEBUG = env.bool("DJANGO_DEBUG", default=False)

# Secret key for signing; required unless DJANGO_DEBUG is on.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off.")
    SECRET_KEY = "insecure-debug-only-key"

# Comma-separated host names this site serves. Default: 127.0.0.1,localhost.
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

# --- HTTPS and cookies --------------------------------------------------------------------
# Each defaults to the safe production value when DJANGO_DEBUG is off. Serving plain HTTP
# locally (make run, docker-compose) turns them off explicitly.

# Redirect plain-HTTP requests to HTTPS (health and metrics are exempt). Default: on unless debug.
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# Seconds browsers must keep to HTTPS (Strict-Transport-Security). Default: 31536000 unless debug.
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
# Send session and CSRF cookies over HTTPS only. Default: on unless debug.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=not DEBUG)
# Trust X-Forwarded-Proto from a TLS-terminating proxy in front of the API. Default: false.
if env.bool("DJANGO_SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Comma-separated origins trusted for CSRF (the admin behind HTTPS), e.g. https://feeds.example.com.
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Largest request body accepted, in bytes; bigger ones get 413. Default: 65536.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DJANGO_DATA_UPLOAD_MAX_MEMORY_SIZE", default=65536)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "eventbus",
    "posts",
    "follows",
    "feeds",
    "consumers",
    "web",
    "streams",
    # Development tooling (seed_demo); nothing in the apps above imports it.
    "devtools",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "core.logcontext.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Sessions, CSRF, Django's auth and messages, for BROWSER_PATHS and BROWSER_PATH_PREFIXES
    # only: the token-authenticated API needs none of them (core.middleware).
    "core.middleware.BrowserSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "core.middleware.BrowserCsrfViewMiddleware",
    "core.middleware.BrowserAuthenticationMiddleware",
    "core.middleware.BrowserMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]
# Path prefixes of the pages browsers use: the admin, the API docs and the web pages
# (profiles at /@name, sign up, in and out, the timeline's new-posts poll, the lists of
# blocks and mutes under /settings/).
BROWSER_PATH_PREFIXES = [
    "/admin/",
    "/api/docs",
    "/@",
    "/signup",
    "/signin",
    "/signout",
    "/timeline/",
    "/settings/",
]
# Paths browsers use, matched exactly: the web timeline at /.
BROWSER_PATHS = ["/"]
# Where the web pages send a visitor who must sign in first.
LOGIN_URL = "/signin"
# security.W003 looks for CsrfViewMiddleware by its exact name; its subclass above checks
# CSRF on every browser path (feedsite/tests/test_middleware.py), and DRF views are exempt.
SILENCED_SYSTEM_CHECKS = ["security.W003"]

ROOT_URLCONF = "feedsite.urls"
WSGI_APPLICATION = "feedsite.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # The composition root's own admin pages (the feed inspector).
        "DIRS": [BASE_DIR / "feedsite" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- PostgreSQL --------------------------------------------------------------------------

# PostgreSQL connection URL. Default: postgres://postgres@127.0.0.1:5432/feeds.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/feeds"),
}
# Django's PostgreSQL backend, whose per-request health check of a reused connection asks
# the socket instead of running SELECT 1 (core.db.health).
DATABASES["default"]["ENGINE"] = "core.db.postgresql"
# Count and time every query in Prometheus (django_db_* metrics); it wraps each query, a
# few percent of a post's CPU, and no dashboard or alert reads them. Default: false.
if env.bool("DATABASE_QUERY_METRICS", default=False):
    DATABASES["default"]["ENGINE"] = "core.db.postgresql_metrics"
# Seconds a database connection is kept open between requests. Default: 60.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Seconds a new database connection may take to open (libpq's connect_timeout), unless
# DATABASE_URL sets it. Default: 5.
DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
    "connect_timeout", env.int("DB_CONNECT_TIMEOUT_SECONDS", default=5)
)
# Milliseconds a database connection may leave sent data unacknowledged, and TCP keepalives
# after 30 s idle: a server that vanished without closing the socket (a network stall) is
# noticed in about half a minute, not after the kernel's 15 minutes. Default: 30000.
DATABASES["default"]["OPTIONS"].setdefault(
    "tcp_user_timeout", env.int("DB_TCP_USER_TIMEOUT_MS", default=30000)
)
# PostgreSQL's JIT for this project's connections (false: jit=off as a startup option).
# Every statement here is short, so a compile never pays for itself; on the partitioned
# feed table the worker's trim passed jit_above_cost and took 16 times as long. Default: false.
if not env.bool("DB_JIT", default=False):
    _options = DATABASES["default"]["OPTIONS"].get("options", "")
    DATABASES["default"]["OPTIONS"]["options"] = f"{_options} -c jit=off".strip()
DATABASES["default"]["OPTIONS"].setdefault("keepalives", 1)
DATABASES["default"]["OPTIONS"].setdefault("keepalives_idle", 30)
DATABASES["default"]["OPTIONS"].setdefault("keepalives_interval", 10)
DATABASES["default"]["OPTIONS"].setdefault("keepalives_count", 3)
# Milliseconds an API request's statement may wait for a lock (PostgreSQL's lock_timeout);
# a request that hits it, or the statement timeout, is a 503 with Retry-After and stores
# nothing. Set per connection by the API process only (core.db.timeouts). Default: 2000.
DB_LOCK_TIMEOUT_MS = env.int("DB_LOCK_TIMEOUT_MS", default=2000)
# Milliseconds one statement of an API request may run (statement_timeout). Default: 5000.
DB_STATEMENT_TIMEOUT_MS = env.int("DB_STATEMENT_TIMEOUT_MS", default=5000)
# Threads of each API process that run requests in Django (GUNICORN_THREADS). Default: 4.
API_DJANGO_THREADS = env.int("GUNICORN_THREADS", default=4)
# Milliseconds a request waits for one of them before it is answered 503 with Retry-After;
# meanwhile the GUNICORN_QUEUE_THREADS further threads answer cached first pages. Default: 500.
API_REQUEST_QUEUE_MS = env.int("API_REQUEST_QUEUE_MS", default=500)
# Milliseconds a statement of the fan-out worker or the outbox relay may wait for a lock;
# one that hits it is retried with backoff, as during an outage, and is logged. Default: 30000.
WORKER_DB_LOCK_TIMEOUT_MS = env.int("WORKER_DB_LOCK_TIMEOUT_MS", default=30000)
# Milliseconds one statement of the worker or the relay may run. Default: 300000.
WORKER_DB_STATEMENT_TIMEOUT_MS = env.int("WORKER_DB_STATEMENT_TIMEOUT_MS", default=300000)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis -------------------------------------------------------------------------------

# Redis URL for the feed page and token caches. Default: redis://127.0.0.1:6379/0.
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        # Prefix of every Redis key. Default: feedsite.
        "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="feedsite"),
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "SOCKET_CONNECT_TIMEOUT": 2,
            "SOCKET_TIMEOUT": 2,
        },
    }
}

# --- Kafka -------------------------------------------------------------------------------

# Comma-separated Kafka bootstrap servers. Default: 127.0.0.1:9092.
KAFKA_BOOTSTRAP_SERVERS = env.str("KAFKA_BOOTSTRAP_SERVERS", default="127.0.0.1:9092")
# Extra librdkafka properties (JSON object) merged into every client, e.g. SASL/TLS. Default: {}.
KAFKA_CLIENT_CONFIG = env.json("KAFKA_CLIENT_CONFIG", default={})
# Topic that carries feed events. Default: feed-events.
FEED_EVENTS_TOPIC = env.str("FEED_EVENTS_TOPIC", default="feed-events")
# Dead-letter topic for events the worker cannot process. Default: feed-events.dlq.
FEED_EVENTS_DLQ_TOPIC = env.str("FEED_EVENTS_DLQ_TOPIC", default="feed-events.dlq")
# Partitions created for the events topic; the upper bound on parallel workers. Default: 6.
FEED_EVENTS_PARTITIONS = env.int("FEED_EVENTS_PARTITIONS", default=6)
# Replication factor for created topics. Default: 1 (use 3 on a production cluster).
KAFKA_REPLICATION_FACTOR = env.int("KAFKA_REPLICATION_FACTOR", default=1)
# Milliseconds the producer waits to batch messages. Default: 5.
KAFKA_PRODUCER_LINGER_MS = env.int("KAFKA_PRODUCER_LINGER_MS", default=5)
# Seconds to wait for outstanding deliveries when a process exits. Default: 10.
KAFKA_PRODUCER_FLUSH_TIMEOUT = env.float("KAFKA_PRODUCER_FLUSH_TIMEOUT", default=10.0)
# Milliseconds the producer keeps retrying one message before reporting it failed. Default: 30000.
KAFKA_MESSAGE_TIMEOUT_MS = env.int("KAFKA_MESSAGE_TIMEOUT_MS", default=30000)

# --- Outbox relay ------------------------------------------------------------------------

# Most outbox rows the relay publishes per batch. Default: 500.
OUTBOX_RELAY_BATCH_SIZE = env.int("OUTBOX_RELAY_BATCH_SIZE", default=500)
# Milliseconds the relay waits before looking again when it found less than a full batch:
# an upper bound on what it adds to post-to-feed latency; an idle look is one indexed
# query. Default: 10.
OUTBOX_RELAY_INTERVAL_MS = env.int("OUTBOX_RELAY_INTERVAL_MS", default=10)
# Longest pause, in seconds, between relay attempts while the broker is down. Default: 30.
OUTBOX_RELAY_BACKOFF_MAX = env.float("OUTBOX_RELAY_BACKOFF_MAX", default=30.0)
# Seconds sent outbox rows are kept before they are pruned. Default: 600.
OUTBOX_RETENTION_SECONDS = env.int("OUTBOX_RETENTION_SECONDS", default=600)
# Port on which the relay serves its Prometheus metrics (0 disables). Default: 9102.
OUTBOX_RELAY_METRICS_PORT = env.int("OUTBOX_RELAY_METRICS_PORT", default=9102)

# --- Fan-out worker ----------------------------------------------------------------------

# Consumer group of the run_fanout workers. Default: feed-fanout.
FANOUT_GROUP_ID = env.str("FANOUT_GROUP_ID", default="feed-fanout")
# Most messages the worker takes in one batch. Default: 500.
FANOUT_BATCH_SIZE = env.int("FANOUT_BATCH_SIZE", default=500)
# Milliseconds a batch keeps taking messages while more keep arriving, and the longest the
# worker waits for a first one; a batch never waits to fill. Default: 100.
FANOUT_BATCH_MS = env.int("FANOUT_BATCH_MS", default=100)
# Longest the broker may hold a fetch while it has no new data (fetch.wait.max.ms); bounds
# post-to-feed latency on brokers that hold fetches to the limit. Default: 20.
FANOUT_FETCH_WAIT_MS = env.int("FANOUT_FETCH_WAIT_MS", default=20)
# Consumer group session timeout in milliseconds; joins wait about half of it. Default: 6000.
FANOUT_SESSION_TIMEOUT_MS = env.int("FANOUT_SESSION_TIMEOUT_MS", default=6000)
# Attempts at an event whose handler keeps failing before it is dead-lettered. Default: 3.
FANOUT_MAX_RETRIES = env.int("FANOUT_MAX_RETRIES", default=3)
# Share of dead letters in the recent window that stops the worker (circuit breaker). Default: 0.5.
FANOUT_DLQ_MAX_RATIO = env.float("FANOUT_DLQ_MAX_RATIO", default=0.5)
# Messages in the breaker's window; it can trip only once a tenth of them were seen. Default: 200.
FANOUT_DLQ_WINDOW = env.int("FANOUT_DLQ_WINDOW", default=200)
# Seconds an owned partition with messages left may hand out none (unless paused for a retry
# wait) before the worker logs it and feed_fanout_partition_stalled_seconds rises. Default: 60.
FANOUT_STALL_SECONDS = env.int("FANOUT_STALL_SECONDS", default=60)
# Seconds after SIGTERM before the worker gives up on a clean stop and exits 1. Default: 30.
FANOUT_SHUTDOWN_TIMEOUT = env.int("FANOUT_SHUTDOWN_TIMEOUT", default=30)
# Port on which run_fanout serves its Prometheus metrics (0 disables). Default: 9101.
FANOUT_METRICS_PORT = env.int("FANOUT_METRICS_PORT", default=9101)
# Address the worker's and the relay's metrics servers bind to. Default: 127.0.0.1.
METRICS_HOST = env.str("METRICS_HOST", default="127.0.0.1")
# Comma-separated networks (CIDR) whose clients may GET the API's /metrics; others get 404,
# and an empty list hides it from everyone. Default: 127.0.0.1/32,::1/128 (the host itself).
METRICS_ALLOWED_NETWORKS = env.list("METRICS_ALLOWED_NETWORKS", default=["127.0.0.1/32", "::1/128"])
for _network in METRICS_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network)
    except ValueError:
        raise ImproperlyConfigured(
            f"METRICS_ALLOWED_NETWORKS holds {_network!r}, not a network like 10.0.0.0/8."
        ) from None

# --- Posts and feeds ---------------------------------------------------------------------

# Longest post content, in characters. Default: 500.
POST_MAX_LENGTH = env.int("POST_MAX_LENGTH", default=500)
# Seconds a POST /posts Idempotency-Key is kept: a retry with it within this time gets the
# first response again instead of a second post. Default: 86400 (24 h).
POST_IDEMPOTENCY_SECONDS = env.int("POST_IDEMPOTENCY_SECONDS", default=86400)
# Seconds since a user was last seen during which they count as active: only active users'
# feeds get rows from fan-out, backfill and rebuilds, and vacuum_feeds drops the stored
# entries of the others. Default: 2592000 (30 days).
FEED_ACTIVE_SECONDS = env.int("FEED_ACTIVE_SECONDS", default=30 * 24 * 3600)
# Seconds within which a user is recorded as seen at most once (at least 1); fan-out also
# writes to users seen this much longer ago than FEED_ACTIVE_SECONDS. Default: 3600.
FEED_ACTIVITY_RESOLUTION_SECONDS = max(1, env.int("FEED_ACTIVITY_RESOLUTION_SECONDS", default=3600))
# Seconds between the worker's steps of vacuum_feeds (0: the worker does not vacuum).
# Default: 600.
FEED_VACUUM_INTERVAL_SECONDS = env.int("FEED_VACUUM_INTERVAL_SECONDS", default=600)
# Idle users whose entries one vacuum step deletes. Default: 500.
FEED_VACUUM_BATCH = env.int("FEED_VACUUM_BATCH", default=500)
# Hash partitions of the feed table on user_id, fixed when the migration that partitions it
# runs (0: one plain table); manage.py partition_feeds changes it later. Default: 16.
FEED_PARTITIONS = env.int("FEED_PARTITIONS", default=16)
# Feed page size when no limit is given. Default: 20.
FEED_PAGE_SIZE = env.int("FEED_PAGE_SIZE", default=20)
# Largest feed page a client may ask for. Default: 100.
FEED_PAGE_MAX = env.int("FEED_PAGE_MAX", default=100)
# Seconds a cached first feed page lives in Redis. Default: 300.
FEED_CACHE_TTL = env.int("FEED_CACHE_TTL", default=300)
# Seconds between the web timeline's checks for new posts (a read of the cached first
# page). Default: 20.
WEB_NEW_POSTS_POLL_SECONDS = env.int("WEB_NEW_POSTS_POLL_SECONDS", default=20)
# Followers above which an author is not fanned out; followers merge their posts at read time. Default: 10000.
FANOUT_FOLLOWER_LIMIT = env.int("FANOUT_FOLLOWER_LIMIT", default=10000)
# Newest posts of a followee copied into the follower's feed on a new follow. Default: 200.
FEED_BACKFILL_LIMIT = env.int("FEED_BACKFILL_LIMIT", default=200)
# Entries kept per feed; older pages are read from the followed authors' posts. Default: 800.
FEED_MAX_ENTRIES = env.int("FEED_MAX_ENTRIES", default=800)
# Seconds between the worker's trims of the feeds that grew. Default: 10.
FEED_TRIM_INTERVAL = env.float("FEED_TRIM_INTERVAL", default=10.0)
# Most accounts one user may follow; a follow beyond it is refused with 400. Default: 5000.
FOLLOW_LIMIT = env.int("FOLLOW_LIMIT", default=5000)
# Most accounts one user may block, and mute; one more is refused with 400. Reads check a
# post's author against them with index probes, so a read costs the same at the limit as
# with none. Default: 10000 each.
BLOCK_LIMIT = env.int("BLOCK_LIMIT", default=10000)
MUTE_LIMIT = env.int("MUTE_LIMIT", default=10000)
# Seconds an API token lookup is cached in Redis, and so the longest a bulk is_active update
# (which sends no signal) goes unseen. Default: 300.
AUTH_TOKEN_CACHE_TTL = env.int("AUTH_TOKEN_CACHE_TTL", default=300)

# --- API ---------------------------------------------------------------------------------

# Request limits per client. Each is "<count>/<second|minute|hour|day>"; empty disables it.
# While Redis is down they let requests through, except token and login ones (503).
API_THROTTLE_RATES = {
    # Posts one user may create. Default: 60/minute.
    "posts": env.str("THROTTLE_POSTS_RATE", default="60/minute") or None,
    # Accounts one client IP may create. Default: 20/hour.
    "signup": env.str("THROTTLE_SIGNUP_RATE", default="20/hour") or None,
    # Token requests (password checks) from one client IP. Default: 30/minute.
    "token": env.str("THROTTLE_TOKEN_RATE", default="30/minute") or None,
    # Failed password checks against one username, token requests and admin logins together,
    # from any address. Default: 20/hour.
    "account_login": env.str("THROTTLE_ACCOUNT_LOGIN_RATE", default="20/hour") or None,
    # Admin login attempts (POST /admin/login/) from one client IP. Default: 10/minute.
    "admin_login": env.str("THROTTLE_ADMIN_LOGIN_RATE", default="10/minute") or None,
    # Follows one user may create; each copies up to FEED_BACKFILL_LIMIT rows. Default: 100/hour.
    "follow": env.str("THROTTLE_FOLLOW_RATE", default="100/hour") or None,
    # Blocks, and mutes, one user may create; each rewrites two feeds. Default: 100/hour each.
    "block": env.str("THROTTLE_BLOCK_RATE", default="100/hour") or None,
    "mute": env.str("THROTTLE_MUTE_RATE", default="100/hour") or None,
    # Feed reads of one user that reach Django (not cached first pages). Default: 120/minute.
    "feeds": env.str("THROTTLE_FEEDS_RATE", default="120/minute") or None,
}

for _scope, _rate in API_THROTTLE_RATES.items():
    if _rate and not re.fullmatch(r"[1-9][0-9]*/(second|minute|hour|day|[smhd])", _rate):
        raise ImproperlyConfigured(f"Rate for {_scope!r} must look like 60/minute, not {_rate!r}.")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["follows.authentication.CachedTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.BoundedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "EXCEPTION_HANDLER": "core.exceptions.api_exception_handler",
    # Proxies in front of the API that append to X-Forwarded-For; 0 trusts only the
    # socket's address, so clients cannot pick the IP they are throttled as. Default: 0.
    "NUM_PROXIES": env.int("TRUSTED_PROXY_COUNT", default=0),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Feed API",
    "DESCRIPTION": "Accounts, posts, follows and precomputed home feeds.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Plain Django views, documented by hand.
    "APPEND_PATHS": {
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: 200 while the process serves requests.",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "Alive.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: PostgreSQL, Redis and Kafka answer.",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    code: {
                        "description": description,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "status": {"type": "string"},
                                        "down": {"type": "array", "items": {"type": "string"}},
                                        "checks": {"type": "object"},
                                    },
                                    "required": ["status", "down", "checks"],
                                }
                            }
                        },
                    }
                    for code, description in [
                        ("200", "Ready."),
                        ("503", 'A dependency is down; see down. Each check is "ok" or "down".'),
                    ]
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics of the API processes, for METRICS_ALLOWED_NETWORKS only "
                "(404 for other clients).",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {"description": "Prometheus text format.", "content": {"text/plain": {}}},
                    "404": {
                        "description": "The client is not in METRICS_ALLOWED_NETWORKS.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                },
            }
        },
    },
    # The <id:...> path converter of feedsite.urls: a positive bigint.
    "PATH_CONVERTER_OVERRIDES": {"id": {"type": "integer", "minimum": 1, "maximum": 10**18 - 1}},
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# In debug mode serve static files from the apps, without collectstatic.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# --- Live streams (GET /feeds/{id}/stream, the stream process) -----------------------------

# Port of the stream process (make run-stream, make run). Default: 8001.
STREAM_PORT = env.int("STREAM_PORT", default=8001)
# Port on which run_stream's process serves its Prometheus metrics (0 disables). Default: 9103.
STREAM_METRICS_PORT = env.int("STREAM_METRICS_PORT", default=9103)
# Port the web timeline opens its stream on, at the page's own host (0: the page's own origin,
# as behind the reverse proxy of docker-compose). Default: 0.
STREAM_BROWSER_PORT = env.int("STREAM_BROWSER_PORT", default=0)
# Comma-separated origins of pages that may open streams with their cookies from another
# port or host (CORS), e.g. http://localhost:8000. Default: none.
STREAM_ALLOWED_ORIGINS = env.list("STREAM_ALLOWED_ORIGINS", default=[])
# Redis URL of the channel on which posts are announced to stream processes. Default: REDIS_URL.
STREAM_REDIS_URL = env.str("STREAM_REDIS_URL", default=REDIS_URL)
# Open streams per user in one stream process; one more is a 429. Default: 4.
STREAM_MAX_PER_USER = env.int("STREAM_MAX_PER_USER", default=4)
# Open streams per client address in one stream process (0: no limit); one more is a 429. Default: 32.
STREAM_MAX_PER_ADDRESS = env.int("STREAM_MAX_PER_ADDRESS", default=32)
# Seconds a refused stream is told to wait (Retry-After). Default: 15.
STREAM_RETRY_AFTER_SECONDS = env.int("STREAM_RETRY_AFTER_SECONDS", default=15)
# Seconds between heartbeats (a comment line) on an idle stream. Default: 15.
STREAM_HEARTBEAT_SECONDS = env.float("STREAM_HEARTBEAT_SECONDS", default=15.0)
# Seconds between reads of new posts when no announcement comes (Redis down). Default: 2.
STREAM_POLL_SECONDS = env.float("STREAM_POLL_SECONDS", default=2.0)
# Seconds between checks that open streams' tokens, sessions and users still hold. Default: 1.
STREAM_AUTH_CHECK_SECONDS = env.float("STREAM_AUTH_CHECK_SECONDS", default=1.0)
# Posts a returning stream is sent at most; further behind, it gets a reset event. Default: 500.
STREAM_REPLAY_LIMIT = env.int("STREAM_REPLAY_LIMIT", default=500)
# Events queued to one stream that its client has not read; one more ends it. Default: 1000.
STREAM_QUEUE_SIZE = env.int("STREAM_QUEUE_SIZE", default=1000)

# --- Metrics -----------------------------------------------------------------------------

PROMETHEUS_METRIC_NAMESPACE = ""

# --- Logging -----------------------------------------------------------------------------

# Log level of the project's loggers. Default: INFO.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# How log records are written: json (one object per line) or console (readable). Default: json unless debug.
LOG_FORMAT = env.str("LOG_FORMAT", default="console" if DEBUG else "json")
if LOG_FORMAT not in {"json", "console"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or console, not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "core.logcontext.ContextFilter"}},
    "formatters": {
        "json": {"()": "core.logcontext.JsonLineFormatter"},
        "console": {"()": "core.logcontext.ConsoleFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        name: {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False}
        for name in ("core", "eventbus", "posts", "follows", "feeds", "consumers", "feedsite", "devtools")
    },
}
