"""The soak: ``make soak`` (``scripts/soak.py``, which calls ``cli.main``).

The whole stack for ``--seconds`` (``SOAK_SECONDS``, 1800) under a steady mix of traffic at
half of its measured maximum, a row of the system's state each minute, then a check of
every feed; exit status 1 if anything leaked, grew without bound or was lost.

The stack is the bench's (``devtools/bench/cli.py``): production settings with the bench's
changes (``settings_env``), a fresh database (``SOAK_DATABASE_URL``, default
``feeds_soak``), Redis database 14 (``SOAK_REDIS_URL``), a broker of its own and free
ports; the API under gunicorn, ``SOAK_WORKERS`` fan-out workers (``--workers``, default 1:
the one ``make run`` starts, so the maximum is measured and the traffic run on the
deployment by default; more run in one group as ``FANOUT_WORKERS`` does) and the relay.
The graph is the bench's (``graph_seed``: ``--users`` 5,000 in a power-law graph,
``--avg-follows`` 50, two big accounts of 20,000 and 9,000 followers, 2 history posts per
user), 70% of the accounts idle (``idle_mark``), and every feed rebuilt from it.

The maximum is the bench's POST run: wrk, 32 connections, closed loop, for
``--measure-seconds`` (15), posting as the traffic's users with the stack running. The
traffic then runs open loop (``traffic.py``: each request starts on its schedule, whatever
the server does) at half that rate in requests per second, shared among the kinds:

============================  ======  =====================================================
request                       share   why
============================  ======  =====================================================
``GET /feeds/{id}``           60%     the first page, by far the commonest request
``GET /feeds/{id}?cursor=``   15%     one reader in four scrolls on, by the ``next_cursor``
``POST /posts``               20%     with a fresh ``Idempotency-Key`` each
``POST /follow``              2.5%    to accounts picked in proportion to their followers
``DELETE /follow/{id}``       1.5%    of accounts the reader follows; fewer than follows
``DELETE /posts/{id}``        1%      one post in twenty is deleted by its author
============================  ======  =====================================================

Each request is made as a random active user with their own token (the big accounts take
no part, see below). Half the maximum post rate counts all requests, not posts alone: a
read that the page cache does not answer (fan-out invalidates a feed's cached page at each
new entry, so most of an active feed's reads) costs the server about as much as a post,
so this loads the server about as half the maximum's posts would, the headroom a soak
needs. Posts at half the maximum with two reads per post on top saturated the two cores
(503s, latencies of seconds), as the bench's uncached read (about 280/s for the whole
machine) predicts. Reads are three to four times posts, less than a public service sees,
where cached first pages carry most reads: the soak is after the write path's leaks and
losses, which reads do not hide.

Every minute (``--interval``) a row: each process's RSS (gunicorn's master and each
worker, each fan-out worker, the relay, the broker), the workers' summed
``feed_fanout_consumer_lag``, the outbox rows not published and events not applied (from
the database), post-to-feed p99 over the minute (the workers' histogram, two scrapes'
difference), 5xx, unexpected 4xx and failed requests, dead letters, restarts (a process
that exits is started again and counted), and CPU (this process, the server, PostgreSQL,
the machine).

At the end the traffic stops, the outbox and the fan-out drain (at most 300 s), and the
checks (``verdict.py``, which gives each threshold's reason) are: ``manage.py rebuild_feeds
--all --dry-run`` finds 0 entries to add (missing) and 0 to remove (extra); 0 dead
letters, 5xx, unexpected 4xx, failed requests and restarts; drained in time, the lag back
to 0; post-to-feed p99 over the last half at most 1 s (the ``PostToFeedLatencyHigh``
alert's threshold); no process's RSS and not the lag kept rising over the last half (runs
of 300 s or more); and 99% of the requests started within 100 ms of their schedule (the
load kept up; it says whether the generator or the server fell behind). The dev broker's
RSS is reported, not judged: it keeps every message in memory.

The dry run can demand exact equality because the soak keeps to what a rebuild would write:
``FEED_MAX_ENTRIES`` and ``FEED_BACKFILL_LIMIT`` are raised past what a run reaches, so no
feed is trimmed and a follow's backfill copies every post of the account; and the big
accounts neither act nor are followed or unfollowed by the traffic. The first big
account's history post is the oldest entry of every active feed, and a backfill never
copies below a feed's oldest entry (``feeds.services.feed_backfill``), so with it in place
the backfill copies what a rebuild would; a post by the 20,000-follower account would make
it a pulled author, whose stored entries a rebuild removes.

A run of 1800 s or more (not ``--smoke``) writes its section of BENCHMARKS.md, between
``<!-- soak:start -->`` and ``<!-- soak:end -->`` (``report.py``); ``make bench`` keeps it.
``--smoke``: a 300-user graph, 3 s of maximum, 20 s of traffic, a row every 5 s. Logs are
in ``.run/soak/``.
"""
