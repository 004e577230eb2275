"""The benchmark: ``make bench`` (``scripts/bench.py``, which calls ``cli.main``).

Its parts, by what they measure:

- ``seeding``: the power-law follow graph, its users and the POST runs' authors;
- ``ceilings``: the reference ceilings: the bare read and the bare durable write under the
  API's gunicorn settings, and ``INSERT ... SELECT`` fan-out straight in PostgreSQL;
- ``api_runs``: the API's closed-loop (wrk) and open-loop runs: feed reads, the web timeline
  and posts, with the fan-out worker stopped and running;
- ``fanout``: a burst drained by one worker, post-to-feed latencies, peak memory, and the
  burst written again in one process;
- ``report``: the markdown of BENCHMARKS.md.

What they share: ``run`` (one run's ports, graph, processes and results), ``load`` (wrk
and the open-loop driver), ``cpu`` (the CPU of the server's processes, from ``/proc``),
``common`` (paths, log, progress bars, wrk's install, the worker's metrics). ``cli``
parses the arguments, sets the environment and runs the steps in order.
"""
