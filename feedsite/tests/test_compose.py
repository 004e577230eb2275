"""docker-compose.yml cannot run here, so check that it agrees with the code and settings."""

import ipaddress
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent.parent


# What an operator sets before `docker compose up` (in the environment or in .env, which
# compose reads); everything else keeps its default.
OPERATOR_ENV = {"DJANGO_SECRET_KEY": "an-operator-chosen-key"}


class MissingVariable(Exception):
    pass


def interpolate(text: str, environ: dict[str, str]) -> str:
    """Compose's interpolation: $$, ${VAR}, ${VAR:-default}, ${VAR-default}, and
    ${VAR:?message} / ${VAR?message}, which refuse to start when VAR is unset (or empty, with
    the colon)."""

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, operator, argument = match.group("name"), match.group("op") or "", match.group("arg") or ""
        value = environ.get(name)
        missing = value is None or (operator.startswith(":") and value == "")
        if operator.endswith("?") and missing:
            raise MissingVariable(f"{name}: {argument}")
        if operator.endswith("-") and missing:
            return argument
        return value or ""

    pattern = r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    return re.sub(pattern, replace, text)


def expand(value: object) -> str:
    return interpolate(str(value), OPERATOR_ENV)


@pytest.fixture(scope="module")
def compose() -> dict:
    text = (ROOT / "docker-compose.yml").read_text()
    return yaml.safe_load(interpolate(text, OPERATOR_ENV))


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def env_of(service: dict) -> dict[str, str]:
    return {k: expand(v) for k, v in service.get("environment", {}).items()}


def settings_env_names() -> set[str]:
    """Every environment variable the settings, the local settings file and the gunicorn config read."""
    base = (ROOT / "feedsite/settings/base.py").read_text()
    gunicorn = (ROOT / "feedsite/gunicorn.conf.py").read_text()
    names = set(re.findall(r'env\.\w+\(\s*"([A-Z0-9_]+)"', base))
    names |= set(re.findall(r'os\.environ\.get\(\s*"([A-Z0-9_]+)"', gunicorn))
    names |= set(re.findall(r"os\.environ\.get\('([A-Z0-9_]+)'", gunicorn))
    envfile = (ROOT / "core/envfile.py").read_text()
    names |= set(re.findall(r'os\.environ\.get\(\s*"([A-Z0-9_]+)"', envfile))
    return names | {"PROMETHEUS_MULTIPROC_DIR"}


def test_the_stack_has_every_service_with_a_healthcheck(services):
    assert {"postgres", "redis", "kafka", "api", "fanout", "relay", "prometheus"} <= set(services)
    assert not any("zookeeper" in name or "zookeeper" in str(s.get("image")) for name, s in services.items())
    for name in ("postgres", "redis", "kafka", "api", "fanout", "relay", "prometheus"):
        assert services[name]["healthcheck"]["test"], name


def test_kafka_is_apache_kafka_in_kraft_mode(services):
    kafka = services["kafka"]
    env = env_of(kafka)
    assert kafka["image"].startswith("apache/kafka:")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")


def test_apps_reach_the_services_as_compose_defines_them(services):
    kafka_env = env_of(services["kafka"])
    advertised = dict(
        listener.split("://") for listener in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    postgres_env = env_of(services["postgres"])
    for name in ("api", "fanout", "relay", "stream", "init"):
        env = env_of(services[name])
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == advertised["INTERNAL"], name
        db = urlsplit(env["DATABASE_URL"])
        assert (db.hostname, db.port) == ("postgres", 5432)
        assert db.username == postgres_env["POSTGRES_USER"]
        assert db.password == postgres_env["POSTGRES_PASSWORD"]
        assert db.path.lstrip("/") == postgres_env["POSTGRES_DB"]
        assert urlsplit(env["REDIS_URL"]).hostname == "redis"
        assert env["DJANGO_DEBUG"] == "false"


def test_every_app_variable_is_a_setting_the_code_reads(services):
    known = settings_env_names()
    for name in ("api", "fanout", "relay", "stream", "init"):
        unknown = set(env_of(services[name])) - known
        assert not unknown, f"{name} sets variables nothing reads: {unknown}"


def test_commands_ports_and_scrape_targets_agree(services):
    api_env, fanout_env = env_of(services["api"]), env_of(services["fanout"])
    assert "gunicorn" in services["api"]["command"]
    assert services["fanout"]["command"][-2:] == ["manage.py", "run_fanout"]
    assert services["relay"]["command"][-2:] == ["manage.py", "run_outbox_relay"]
    # Only the proxy is published; the API and the stream process are reached through it.
    assert "ports" not in services["api"]
    assert "ports" not in services["stream"]
    assert services["proxy"]["ports"] == [f"127.0.0.1:{api_env['PORT']}:{PROXY_PORT}"]
    assert api_env["HOST"] == "0.0.0.0"
    stream_env = env_of(services["stream"])
    assert services["stream"]["command"][-4:] == ["manage.py", "run_stream", "--host", "0.0.0.0"]
    assert api_env["TRUSTED_PROXY_COUNT"] == stream_env["TRUSTED_PROXY_COUNT"] == "1"
    assert api_env["STREAM_BROWSER_PORT"] == "0"  # the page's own origin: the proxy
    assert fanout_env["METRICS_HOST"] == "0.0.0.0"
    assert "PROMETHEUS_MULTIPROC_DIR" in api_env

    targets = scrape_targets(services)
    assert targets["api"] == [f"api:{api_env['PORT']}"]
    assert targets["fanout"] == [f"fanout:{fanout_env['FANOUT_METRICS_PORT']}"]
    relay_env = env_of(services["relay"])
    assert targets["relay"] == [f"relay:{relay_env['OUTBOX_RELAY_METRICS_PORT']}"]
    assert relay_env["METRICS_HOST"] == "0.0.0.0"
    assert targets["stream"] == [f"stream:{stream_env['STREAM_METRICS_PORT']}"]
    assert stream_env["METRICS_HOST"] == "0.0.0.0"


def scrape_targets(services: dict) -> dict[str, list[str]]:
    """Each Prometheus job's targets, ``host:port``: listed, or every address of a compose
    service name (DNS service discovery, for the services that run several replicas)."""
    volume = services["prometheus"]["volumes"][0].split(":")[0]
    scrape = yaml.safe_load((ROOT / volume).read_text())
    targets = {}
    for job in scrape["scrape_configs"]:
        listed = [target for config in job.get("static_configs", []) for target in config["targets"]]
        found = [f"{name}:{c['port']}" for c in job.get("dns_sd_configs", []) for name in c["names"]]
        targets[job["job_name"]] = listed + found
    return targets


def test_several_workers_and_a_standby_relay_run_and_are_each_scraped(services):
    """FANOUT_WORKERS replicas of the worker (2 unless the operator says), two relays (one
    of them a standby): Prometheus must find every replica, not the first address only."""
    text = (ROOT / "docker-compose.yml").read_text()
    for environ, workers in ((OPERATOR_ENV, 2), ({**OPERATOR_ENV, "FANOUT_WORKERS": "4"}, 4)):
        composed = yaml.safe_load(interpolate(text, environ))["services"]
        assert int(composed["fanout"]["deploy"]["replicas"]) == workers
        assert int(composed["relay"]["deploy"]["replicas"]) == 2
        for name in ("fanout", "relay"):
            assert "container_name" not in composed[name], "replicas cannot share a name"
            assert "ports" not in composed[name], "nor a host port"
    volume = services["prometheus"]["volumes"][0].split(":")[0]
    jobs = {job["job_name"]: job for job in yaml.safe_load((ROOT / volume).read_text())["scrape_configs"]}
    for name in ("fanout", "relay"):
        assert [c["type"] for c in jobs[name]["dns_sd_configs"]] == ["A"]
        assert "static_configs" not in jobs[name]


def test_prometheus_in_compose_may_scrape_the_api(services):
    """The API serves /metrics only to METRICS_ALLOWED_NETWORKS. Compose gives its network
    a subnet from Docker's default address pools, so those must be allowed; the port is
    published on the host's loopback only, so nothing beyond the host reaches it."""
    allowed = [
        ipaddress.ip_network(n) for n in env_of(services["api"])["METRICS_ALLOWED_NETWORKS"].split(",")
    ]
    docker_default_pools = [ipaddress.ip_network("172.17.0.0/16"), ipaddress.ip_network("192.168.0.0/16")]
    docker_default_pools += [ipaddress.ip_network(f"172.{n}.0.0/16") for n in range(18, 32)]
    for pool in docker_default_pools:
        assert any(pool.subnet_of(network) for network in allowed if network.version == 4), pool
    assert ipaddress.ip_network("127.0.0.1/32") in allowed
    assert not any(ipaddress.ip_address("8.8.8.8") in network for network in allowed)
    assert all(port.startswith("127.0.0.1:") for port in services["proxy"]["ports"])


def test_the_app_environment_loads_as_settings(services, tmp_path):
    env = {
        **env_of(services["api"]),
        "DJANGO_SETTINGS_MODULE": "feedsite.settings.base",
        # The image holds no .env (.dockerignore).
        "DJANGO_ENV_FILE": "",
        # The image creates this directory; gunicorn empties it at start.
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
    }
    script = (
        "import django; django.setup(); from django.conf import settings as s; "
        "d = s.DATABASES['default']; "
        "print(d['HOST'], d['NAME'], s.KAFKA_BOOTSTRAP_SERVERS, s.DEBUG, s.FEED_EVENTS_TOPIC)"
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["postgres", "feeds", "kafka:29092", "False", "feed-events"]


def test_the_configuration_table_documents_every_setting():
    configuration = (ROOT / "docs/CONFIGURATION.md").read_text()
    rows = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", configuration, flags=re.MULTILINE))
    missing = settings_env_names() - rows
    assert not missing, f"the table in docs/CONFIGURATION.md lacks: {sorted(missing)}"


def test_redis_evicts_as_the_architecture_recommends(services):
    command = [str(arg) for arg in services["redis"]["command"]]
    options = dict(zip(command[1::2], command[2::2], strict=False))
    architecture = (ROOT / "docs/ARCHITECTURE.md").read_text()
    recommended = set(re.findall(r"maxmemory-policy (\S+?)`", architecture))

    assert recommended == {"volatile-lru"}
    assert options.get("--maxmemory-policy") in recommended
    assert re.fullmatch(r"[1-9][0-9]*(mb|gb)", options.get("--maxmemory", "")), "maxmemory unset or 0"


def test_compose_refuses_to_start_without_a_secret_key():
    """No key is shipped: without DJANGO_SECRET_KEY (empty counts as unset) interpolation
    fails, as `docker compose up` does, naming the variable."""
    text = (ROOT / "docker-compose.yml").read_text()

    for environ in ({}, {"DJANGO_SECRET_KEY": ""}):
        with pytest.raises(MissingVariable, match="DJANGO_SECRET_KEY"):
            interpolate(text, environ)
    assert "change-me" not in text
    assert (
        yaml.safe_load(interpolate(text, OPERATOR_ENV))["x-app"]["environment"]["DJANGO_SECRET_KEY"]
        == (OPERATOR_ENV["DJANGO_SECRET_KEY"])
    )


def test_interpolation_follows_compose():
    environ = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $${SET}", environ) == "x d  d ${SET}"
    assert interpolate("${EMPTY?m}", environ) == ""
    with pytest.raises(MissingVariable, match="UNSET: say so"):
        interpolate("${UNSET:?say so}", environ)


def image_services(compose: dict) -> dict[str, dict]:
    return {name: s for name, s in compose["services"].items() if s.get("image") == compose["x-app"]["image"]}


def test_the_image_exposes_every_port_compose_maps_or_prometheus_scrapes_on_it(compose):
    dockerfile = (ROOT / "Dockerfile").read_text()
    exposed = {
        int(port.split("/")[0])
        for line in re.findall(r"^EXPOSE (.+)$", dockerfile, re.MULTILINE)
        for port in line.split()
    }
    services = image_services(compose)
    assert {"api", "fanout", "relay"} <= set(services)

    # The ports the proxy passes requests to.
    mapped = {int(port) for _, port in re.findall(r"set \$\w+ (\w+):(\d+);", NGINX_CONF.read_text())}
    scraped = {
        int(target.rsplit(":", 1)[1])
        for targets in scrape_targets(compose["services"]).values()
        for target in targets
        if target.rsplit(":", 1)[0] in services
    }
    assert mapped == {8000, 8001}
    assert scraped == {8000, 9101, 9102, 9103}
    assert mapped | scraped <= exposed, f"not exposed: {sorted((mapped | scraped) - exposed)}"


def test_the_image_holds_no_local_settings_file():
    """A developer's .env (their key, plain HTTP) must not ride into the image with COPY . ."""
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored
    assert "COPY . ." in (ROOT / "Dockerfile").read_text()


# --- The reverse proxy ----------------------------------------------------------------------

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
# The port the proxy listens on inside its container.
PROXY_PORT = 8000


def nginx_check(conf: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """``nginx -t`` on ``conf``, with its pid file and temporary files under ``tmp_path``."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        pytest.fail("nginx is missing: install Debian's nginx package", pytrace=False)
    return subprocess.run(
        [nginx, "-t", "-q", "-c", str(conf), "-p", str(tmp_path), "-g", f"pid {tmp_path}/nginx.pid;"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_nginx_accepts_the_proxy_config(tmp_path):
    result = nginx_check(NGINX_CONF, tmp_path)
    assert result.returncode == 0, result.stderr


def test_nginx_refuses_a_broken_proxy_config(tmp_path):
    broken = tmp_path / "nginx.conf"
    broken.write_text(NGINX_CONF.read_text().replace("proxy_buffering off;", "proxy_buffering sometimes;"))
    result = nginx_check(broken, tmp_path)
    assert result.returncode != 0
    assert "proxy_buffering" in result.stderr


def test_the_proxy_routes_streams_unbuffered_and_the_rest_to_the_api(services):
    text = NGINX_CONF.read_text()
    locations = dict(re.findall(r"location ([^{]+?) \{(.*?)\n        \}", text, re.DOTALL))
    stream_pattern = next(key for key in locations if key.startswith("~"))
    regex = re.compile(stream_pattern.removeprefix("~").strip())
    assert regex.search("/feeds/42/stream")
    assert not regex.search("/feeds/42")
    assert not regex.search("/feeds/42/stream/x")
    stream = locations[stream_pattern]
    assert f"stream:{env_of(services['stream'])['STREAM_PORT']}" in stream
    assert "proxy_buffering off;" in stream
    # Longer than a heartbeat's interval: an idle stream is never cut by the proxy.
    read_timeout = int(re.search(r"proxy_read_timeout (\d+)s;", stream).group(1))
    assert read_timeout > float(settings.STREAM_HEARTBEAT_SECONDS) * 2
    assert f"api:{env_of(services['api'])['PORT']}" in locations["/"]
    assert "return 404;" in locations["= /metrics"]
    assert re.search(rf"listen {PROXY_PORT};", text)
