"""The live streams' benchmark: ``make bench-stream`` (``scripts/bench_stream.py``).

N readers, each with a token, follow one author; the stream process (``run_stream``, as
make run starts it, production settings) holds one open stream per reader, opened by a
load client in a process of its own (asyncio, raw sockets). It measures the stream
process's memory idle and with the N streams open (so the memory per stream), its CPU
while they sit idle for a while (heartbeats only), and, for ROUNDS posts by the author,
the time from each post's commit to each stream receiving it: p50, p99 and the last
client. The client's own CPU over each delivery shows whether it, rather than the server,
set the pace. It writes its section of BENCHMARKS.md, which make bench keeps.
"""

import argparse
import asyncio
import datetime
import json
import os
import platform
import resource
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

from devtools.bench.common import RUN_DIR, log
from devtools.processes import ROOT, free_port, stop_process

ROUNDS = 5
# Seconds the N streams sit idle while the server's CPU is measured.
IDLE_SECONDS = 20


def arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=int(os.environ.get("BENCH_STREAMS", "2000")))
    parser.add_argument("--smoke", action="store_true", help="a tiny run; writes no BENCHMARKS.md")
    args = parser.parse_args(argv)
    if args.smoke:
        args.streams = 20
    return args


def bench_env(port: int) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "feedsite.settings.base",
        "DJANGO_ENV_FILE": "",
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50),
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "LOG_FORMAT": "console",
        "DATABASE_URL": os.environ.get(
            "BENCH_STREAM_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/feeds_bench_stream"
        ),
        "REDIS_URL": os.environ.get("BENCH_STREAM_REDIS_URL", "redis://127.0.0.1:6379/12"),
        # Its own announcement channel: Redis channels are shared by all its databases.
        "CACHE_KEY_PREFIX": "feedsite-bench-stream",
        "STREAM_PORT": str(port),
        "STREAM_METRICS_PORT": "0",
        # Every stream comes from this machine's one address.
        "STREAM_MAX_PER_ADDRESS": "0",
    }


def readers_seed(count: int) -> tuple[int, list[tuple[int, str]]]:
    """One author and ``count`` readers following them, each with a token: (author id,
    [(reader id, token)])."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from follows.models import Follow

    User = get_user_model()
    author = User.objects.create_user("author", password=secrets.token_urlsafe(16))
    readers = User.objects.bulk_create(
        [User(username=f"reader{n}", password="!") for n in range(count)], batch_size=1000
    )
    Follow.objects.bulk_create([Follow(follower=r, followee=author) for r in readers], batch_size=1000)
    tokens = Token.objects.bulk_create(
        [Token(user=r, key=Token.generate_key()) for r in readers], batch_size=1000
    )
    return author.pk, [(token.user_id, token.key) for token in tokens]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(argv)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = bench_env(port)
    os.environ.update(env)
    import django
    import redis

    django.setup()
    from devtools.stack import database_recreate

    database_recreate(env)
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    author_id, readers = readers_seed(args.streams)
    log(f"{len(readers)} readers of one author seeded")
    tokens_file = RUN_DIR / "stream-tokens.json"
    tokens_file.write_text(json.dumps(readers))

    with open(RUN_DIR / "stream.log", "wb") as output:
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "run_stream", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    client = None
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base, server)
        idle_rss = rss_kib(server.pid)
        client = subprocess.Popen(
            [sys.executable, "-m", "devtools.bench.streams", "client", base, str(tokens_file)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = json.loads(client.stdout.readline())
        assert ready["connected"] == len(readers), ready
        open_rss = rss_kib(server.pid)
        log(f"{ready['connected']} streams open in {ready['seconds']:.1f} s")
        idle = IDLE_SECONDS if not args.smoke else 2
        before = cpu_seconds(server.pid)
        time.sleep(idle)
        idle_cpu = (cpu_seconds(server.pid) - before) / idle
        rounds = [_round(n, author_id, client, server.pid) for n in range(ROUNDS)]
        client.stdin.write("end\n")
        client.stdin.flush()
        client.wait(30)
    finally:
        if client is not None and client.poll() is None:
            client.kill()
        stop_process(server)
    results = {
        "streams": len(readers),
        "idle_rss_kib": idle_rss,
        "open_rss_kib": open_rss,
        "kib_per_stream": (open_rss - idle_rss) / len(readers),
        "idle_cpu_share": idle_cpu,
        "idle_seconds": idle,
        "rounds": rounds,
        "versions": versions(),
        "date": datetime.date.today().isoformat(),
    }
    section = render(results)
    print(section)
    if not args.smoke:
        (RUN_DIR / "stream-results.json").write_text(json.dumps(results, indent=2))
        from devtools.soak.report import section_write

        section_write(section, name="streams")
        log("written to BENCHMARKS.md")
    return 0


def _wait_healthy(base: str, server: subprocess.Popen) -> None:
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, "the stream process exited (.run/bench/stream.log)"
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the stream process did not start")


def _round(number: int, author_id: int, client: subprocess.Popen, server_pid: int) -> dict:
    """One post by the author; the client reports when each stream received it."""
    from django.contrib.auth import get_user_model

    from posts.services import post_create

    author = get_user_model().objects.get(pk=author_id)
    server_before = cpu_seconds(server_pid)
    started = time.time()
    post = post_create(author=author, content=f"round {number}")
    committed = time.time()  # post_create has returned: its transaction committed before
    client.stdin.write(f"{post.pk}\n")
    client.stdin.flush()
    report = json.loads(client.stdout.readline())
    latencies = [(at - committed) * 1000 for at in report["received"]]
    return {
        "post": post.pk,
        "received": len(latencies),
        "commit_ms": (committed - started) * 1000,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "last_ms": max(latencies),
        "client_cpu_share": report["cpu_seconds"] / max(report["wall_seconds"], 1e-6),
        "server_cpu_seconds": cpu_seconds(server_pid) - server_before,
    }


def versions() -> dict[str, str]:
    import uvicorn

    return {"python": platform.python_version(), "uvicorn": uvicorn.__version__}


def render(r: dict) -> str:
    rounds = r["rounds"]
    rows = [
        f"| {n + 1} | {x['received']} | {x['p50_ms']:.0f} | {x['p99_ms']:.0f} | {x['last_ms']:.0f} "
        f"| {x['client_cpu_share']:.0%} | {x['server_cpu_seconds']:.2f} |"
        for n, x in enumerate(rounds)
    ]
    median = {key: statistics.median(x[key] for x in rounds) for key in ("p50_ms", "p99_ms", "last_ms")}
    return "\n".join(
        [
            "<!-- streams:start -->",
            "## Live streams",
            "",
            f"Run on {r['date']}. `make bench-stream`: {r['streams']:,} open streams of "
            "`GET /feeds/{id}/stream`, "
            "one per reader, all following one author, on one stream process "
            f"(uvicorn {r['versions']['uvicorn']}, "
            f"Python {r['versions']['python']}, production settings), with the load client in a process of "
            "its own on the same 2 cores, beside PostgreSQL and Redis. Each round is one post by the author; "
            "times run from the post's commit (its transaction had returned) to each stream receiving it.",
            "",
            f"- **Memory:** {r['idle_rss_kib'] / 1024:.0f} MiB idle, {r['open_rss_kib'] / 1024:.0f} MiB with "
            f"{r['streams']:,} streams open: **{r['kib_per_stream']:.1f} KiB per open stream**.",
            f"- **Idle:** with every stream open and no post, the stream process used "
            f"{r['idle_cpu_share']:.1%} of a core over {r['idle_seconds']} s (heartbeats every 15 s, the "
            "poll of new posts every 2 s, the check of credentials every second).",
            f"- **One post to all of them:** median over the rounds, p50 **{median['p50_ms']:.0f} ms**, "
            f"p99 **{median['p99_ms']:.0f} ms**, the last client **{median['last_ms']:.0f} ms**.",
            "",
            "| round | streams reached | p50 ms | p99 ms | last ms | client CPU (share of a core) "
            "| stream process CPU s |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            pace(rounds),
            "<!-- streams:end -->",
        ]
    )


def pace(rounds: list[dict]) -> str:
    """Which side set the pace of delivery, from the CPU each used in the rounds."""
    client = max(x["client_cpu_share"] for x in rounds)
    server = statistics.median(x["server_cpu_seconds"] / max(x["last_ms"] / 1000, 1e-6) for x in rounds)
    verdict = (
        "so the client did not set the pace: the stream process did"
        if client < 0.9
        else "so the client may have set the pace: these times are an upper bound"
    )
    return (
        f"While a post was on its way, the load client used at most {client:.0%} of a core, and the "
        f"stream process about {server:.0%} of one over the round (median), {verdict}."
    )


# --- The load client (a process of its own) -----------------------------------------------


def client_main(base: str, tokens_file: str) -> int:
    """Open one stream per (reader, token) of ``tokens_file``; print {"connected", "seconds"}
    once all answered 200; then for each post id read from stdin, print when each stream
    received it ({"received": [unix times], "cpu_seconds", "wall_seconds"}); "end" ends."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with open(tokens_file) as stream:
        readers = json.load(stream)
    # uvloop, as the server runs: the client's own cost per event is then the smaller.
    import uvloop

    uvloop.run(_client(base, readers))
    return 0


async def _client(base: str, readers: list) -> None:
    host, port = base.removeprefix("http://").split(":")
    started = time.monotonic()
    streams = await asyncio.gather(*(_open(host, int(port), user, token) for user, token in readers))
    print(json.dumps({"connected": len(streams), "seconds": time.monotonic() - started}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line in ("", "end"):
            break
        marker = b'"content":"round '
        wall, cpu = time.monotonic(), _cpu()
        received = await asyncio.wait_for(
            asyncio.gather(*(_until(reader, marker) for reader, _ in streams)), 60
        )
        print(
            json.dumps(
                {"received": received, "cpu_seconds": _cpu() - cpu, "wall_seconds": time.monotonic() - wall}
            ),
            flush=True,
        )
    for _, writer in streams:
        writer.close()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _open(host: str, port: int, user: int, token: str):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 60)
    request = (
        f"GET /feeds/{user}/stream HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Token {token}\r\n\r\n"
    )
    writer.write(request.encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    await asyncio.wait_for(reader.readuntil(b": open\n\n"), 60)
    return reader, writer


async def _until(reader: asyncio.StreamReader, marker: bytes) -> float:
    """The time this stream's next post event came (its bytes may span reads)."""
    seen = b""
    while True:
        data = await reader.read(65536)
        if not data:
            raise RuntimeError("a stream ended")
        seen = seen[-64:] + data
        if marker in seen:
            return time.time()


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        sys.exit(client_main(*sys.argv[2:4]))
