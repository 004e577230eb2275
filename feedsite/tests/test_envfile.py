"""The local settings file (.env): manage.py reads it, the environment wins over it, and the
test settings never read it."""

import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

SHOW = "from django.conf import settings as s; print(s.SECRET_KEY, s.FEED_PAGE_SIZE, s.DEBUG, s.LOG_FORMAT)"


def manage_shell(env_file: Path, settings_module: str, **extra: str) -> subprocess.CompletedProcess:
    """manage.py shell as a newcomer's shell runs it: no DJANGO_* variables but the file's name."""
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": settings_module,
        "DJANGO_ENV_FILE": str(env_file),
        **extra,
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "shell", "-v", "0", "-c", SHOW],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def local_file(tmp_path: Path) -> Path:
    path = tmp_path / "local.env"
    lines = ["# made by make", "DJANGO_SECRET_KEY=from-the-file", "FEED_PAGE_SIZE=7", "LOG_FORMAT=console"]
    path.write_text("\n".join([*lines, "DJANGO_DEBUG=true", ""]))
    return path


def test_manage_py_reads_the_secret_key_and_settings_from_the_local_file(tmp_path):
    result = manage_shell(local_file(tmp_path), "feedsite.settings.base")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["from-the-file", "7", "True", "console"]


def test_the_environment_wins_over_the_local_file(tmp_path):
    result = manage_shell(
        local_file(tmp_path), "feedsite.settings.base", FEED_PAGE_SIZE="9", DJANGO_DEBUG="false"
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["from-the-file", "9", "False", "console"]


def test_an_empty_file_name_reads_no_file(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "feedsite.settings.base", "DJANGO_ENV_FILE": ""}
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "check"], env=env, cwd=ROOT, capture_output=True, text=True
    )

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off" in result.stderr


def test_the_test_settings_never_read_a_local_file(tmp_path):
    """A developer's .env (a key, debug, a page size) must not change what the suite runs under."""
    result = manage_shell(local_file(tmp_path), "feedsite.settings.test")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["test-only-secret-key", "20", "False", "console"]
