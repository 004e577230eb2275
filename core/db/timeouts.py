"""How long this process's database statements may wait, set once per connection.

PostgreSQL's ``lock_timeout`` and ``statement_timeout`` are sent as startup options of each
new connection (libpq's ``options``), so they cost no round trip per request. Each kind of
process picks its own values when it starts (``db_timeouts_use``): the API's requests wait
a few seconds at most, the fan-out worker and the relay longer (a statement they time out
is retried like any outage), and migrations and other management commands not at all.
"""

import re

from django.db import connections

# The startup options this module owns inside OPTIONS["options"].
_OPTION = "-c lock_timeout={lock} -c statement_timeout={statement}"
_OWN = re.compile(r"-c\s*(?:lock_timeout|statement_timeout)=\S+")


def db_timeouts_use(*, lock_timeout_ms: int, statement_timeout_ms: int) -> None:
    """Give this process's new database connections these timeouts, in milliseconds (0:
    none), and close its open ones so that none keeps the old values. Other startup
    options (from DATABASE_URL's ``options``) are kept."""
    option = _OPTION.format(lock=int(lock_timeout_ms), statement=int(statement_timeout_ms))
    for alias in connections:
        # The settings dict every thread's connection of this alias is built from.
        options = connections.settings[alias].setdefault("OPTIONS", {})
        kept = _OWN.sub("", options.get("options", "")).strip()
        options["options"] = f"{kept} {option}".strip()
        connections[alias].close()
