"""The local settings file: ``KEY=value`` lines read into the environment at start.

``make`` creates ``.env`` at the repository root on first use, with a random
``DJANGO_SECRET_KEY`` and the values for serving plain HTTP on this machine, so that
``manage.py`` and every ``make`` target run with the same configuration. A variable the
environment sets wins over the file, so production, compose and the test suite, which set
what they need, are not changed by it.
"""

import os
from pathlib import Path

import environ

ROOT = Path(__file__).resolve().parent.parent


def env_file_path() -> Path | None:
    """``DJANGO_ENV_FILE``, or ``.env`` at the repository root; None when it is set empty."""
    name = os.environ.get("DJANGO_ENV_FILE", str(ROOT / ".env"))
    return Path(name) if name else None


def env_file_read() -> Path | None:
    """Fill in the environment from the local settings file, where it exists, without
    overriding any variable already set; return the file's path (None: none is read)."""
    path = env_file_path()
    if path is not None and path.is_file():
        environ.Env.read_env(path)
    return path
