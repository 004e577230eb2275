"""The Makefile's interface and make run's environment: the local settings file make
creates, the single-process targets and make help."""

import os
import re
import shutil
import stat
import subprocess

import pytest

from devtools import stack
from devtools.processes import ROOT

MAKEFILE = (ROOT / "Makefile").read_text()


def make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def phony_targets() -> list[str]:
    [line] = re.findall(r"^\.PHONY: (.+)$", MAKEFILE, flags=re.MULTILINE)
    return line.split()


def test_the_env_file_gets_a_random_key_and_the_plain_http_values(tmp_path):
    path = tmp_path / ".env"

    stack.devstack_env_file(path=path, legacy_key=tmp_path / "no-such-key")

    parsed = dict(line.split("=", 1) for line in path.read_text().splitlines() if line and line[0] != "#")
    assert len(parsed["DJANGO_SECRET_KEY"]) >= 50
    assert parsed["DJANGO_SECURE_SSL_REDIRECT"] == parsed["DJANGO_SECURE_COOKIES"] == "false"
    assert parsed["DJANGO_SECURE_HSTS_SECONDS"] == "0"
    assert parsed["LOG_FORMAT"] == "console"
    assert "PROMETHEUS_MULTIPROC_DIR" not in parsed, "the API's alone: other processes must not write there"
    assert "DJANGO_SETTINGS_MODULE" not in parsed
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "it holds a secret"


def test_the_env_file_is_made_once_and_another_checkout_gets_another_key(tmp_path):
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    stack.devstack_env_file(path=first, legacy_key=tmp_path / "none")
    made = first.read_text()

    stack.devstack_env_file(path=first, legacy_key=tmp_path / "none")
    stack.devstack_env_file(path=second, legacy_key=tmp_path / "none")

    assert first.read_text() == made
    assert second.read_text() != made


def test_an_earlier_checkouts_key_moves_into_the_env_file(tmp_path):
    """Sessions signed with the key kept in .run/secret-key stay valid."""
    legacy = tmp_path / "secret-key"
    legacy.write_text("kept-from-before-" + "x" * 40 + "\n")

    stack.devstack_env_file(path=tmp_path / ".env", legacy_key=legacy)

    assert f"DJANGO_SECRET_KEY=kept-from-before-{'x' * 40}\n" in (tmp_path / ".env").read_text()


@pytest.mark.parametrize("name", ["api", "fanout", "relay", "stream"])
def test_each_process_gets_the_environment_it_has_under_make_run(name, tmp_path):
    env = stack.devstack_process_env(name, {"PATH": "/usr/bin"}, run_dir=tmp_path)

    assert env["DJANGO_SECURE_SSL_REDIRECT"] == env["DJANGO_SECURE_COOKIES"] == "false"
    assert env["LOG_FORMAT"] == "console"
    assert env["DJANGO_SETTINGS_MODULE"] == "feedsite.settings.base"
    if name == "api":
        assert env["PROMETHEUS_MULTIPROC_DIR"] == str(tmp_path / "prometheus")
    else:
        assert "PROMETHEUS_MULTIPROC_DIR" not in env
    # The timeline's page (on the API's port) opens its stream on the stream process's.
    assert env["STREAM_BROWSER_PORT"] == "8001"
    assert env["STREAM_ALLOWED_ORIGINS"] == "http://localhost:8000,http://127.0.0.1:8000"


def test_make_run_starts_fanout_workers_each_on_its_own_metrics_port():
    assert stack.devstack_fanout_workers({}) == [("fanout", {"FANOUT_METRICS_PORT": "9101"})]
    assert stack.devstack_fanout_workers({"FANOUT_WORKERS": "3", "FANOUT_METRICS_PORT": "9200"}) == [
        ("fanout", {"FANOUT_METRICS_PORT": "9200"}),
        ("fanout-2", {"FANOUT_METRICS_PORT": "9210"}),
        ("fanout-3", {"FANOUT_METRICS_PORT": "9220"}),
    ]
    ports = {env["FANOUT_METRICS_PORT"] for _, env in stack.devstack_fanout_workers({"FANOUT_WORKERS": "10"})}
    assert len(ports) == 10, "clear of each other"
    assert "9102" not in ports, "and of the relay's port"


@pytest.mark.parametrize("value", ["0", "-1", "two", ""])
def test_make_run_refuses_a_worker_count_that_is_not_a_positive_number(value):
    with pytest.raises(SystemExit, match="FANOUT_WORKERS must be a whole number of at least 1"):
        stack.devstack_fanout_workers({"FANOUT_WORKERS": value})


def test_the_environment_and_the_env_file_win_over_make_runs_defaults(tmp_path):
    env = stack.devstack_process_env("api", {"DJANGO_SECURE_SSL_REDIRECT": "true"}, run_dir=tmp_path)

    assert env["DJANGO_SECURE_SSL_REDIRECT"] == "true"


def test_make_help_lists_every_target_with_its_description():
    result = make("help")

    assert result.returncode == 0, result.stderr
    listed = dict(re.findall(r"^  (\S+) +(\S.*)$", result.stdout, flags=re.MULTILINE))
    for target in phony_targets():
        assert listed.get(target), f"make help does not describe {target}"
    assert set(listed) >= {"infra", "run-api", "run-processor", "test", "dlq"}, "the seed's targets"


def test_make_alone_is_make_help():
    assert make().stdout == make("help").stdout


def test_every_target_has_a_one_line_description():
    described = set(re.findall(r"^## ([\w.-]+): \S", MAKEFILE, flags=re.MULTILINE))
    rules = set(re.findall(r"^([a-z][\w-]*(?: [a-z][\w-]*)*):", MAKEFILE, flags=re.MULTILINE))
    targets = {name for rule in rules for name in rule.split()}
    assert targets - described == set()
    assert set(phony_targets()) == targets


@pytest.mark.parametrize(
    ("target", "action"),
    [
        ("run-api", "api"),
        ("run-fanout", "fanout"),
        ("run-processor", "fanout"),
        ("run-relay", "relay"),
        ("run-stream", "stream"),
    ],
)
def test_the_single_process_targets_start_their_part_of_make_run(target, action):
    result = make("--dry-run", "--always-make", target)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f".venv/bin/python scripts/devstack.py {action}"


def test_make_demo_prints_the_port_the_api_runs_on(monkeypatch):
    from devtools.management.commands.seed_demo import api_url_default

    monkeypatch.setitem(os.environ, "PORT", "8123")
    monkeypatch.delitem(os.environ, "HOST", raising=False)
    assert api_url_default() == "http://127.0.0.1:8123"
    monkeypatch.setitem(os.environ, "HOST", "0.0.0.0")
    assert api_url_default() == "http://127.0.0.1:8123"
    monkeypatch.setitem(os.environ, "HOST", "10.1.2.3")
    assert api_url_default() == "http://10.1.2.3:8123"
    monkeypatch.delitem(os.environ, "PORT")
    assert api_url_default() == "http://10.1.2.3:8000"


# --- The Debian packages make test uses ---------------------------------------------------

PACKAGES_SCRIPT = ROOT / "scripts" / "system-packages.sh"
TEST_COMMANDS = ("chromium", "promtool", "wrk", "curl", "nginx")


def path_with(tmp_path, commands) -> str:
    """A PATH holding what the script itself runs, plus stand-ins for ``commands``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "id"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    for command in commands:
        (bin_dir / command).write_text("#!/bin/sh\n")
        (bin_dir / command).chmod(0o755)
    return str(bin_dir)


def packages_check(path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which("bash"), str(PACKAGES_SCRIPT), "test"],
        env={"PATH": path},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_make_test_checks_the_debian_packages_before_any_test():
    for target in ("test", "test-fast"):
        commands = make("--dry-run", "--always-make", target).stdout.splitlines()

        checks = [i for i, line in enumerate(commands) if "scripts/system-packages.sh test" in line]
        pytests = [i for i, line in enumerate(commands) if line.startswith(".venv/bin/pytest")]
        assert checks, commands
        assert pytests, commands
        assert checks[0] < pytests[0], commands


def test_the_package_check_is_silent_when_everything_is_there(tmp_path):
    result = packages_check(path_with(tmp_path, TEST_COMMANDS))

    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_missing_package_it_cannot_install_stops_with_one_line_naming_it_and_its_install(tmp_path):
    # No apt-get on the PATH: as when not root, it cannot install them itself.
    result = packages_check(path_with(tmp_path, ("chromium", "curl")))

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "make test needs the Debian packages prometheus wrk nginx: "
        "install them with sudo apt-get install -y prometheus wrk nginx"
    ]
