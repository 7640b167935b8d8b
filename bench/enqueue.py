"""Enqueue throughput with wrk, and the load client's ceiling against a no-op endpoint.

scheduler_app and baseline: wrk POSTs /subscribe (due in 30 days, so nothing fires) for a fixed
time. limit: the same wrk command against a FastAPI app whose POST endpoint does nothing (one
uvicorn worker): the client's ceiling, which also shows that wrk is not the bottleneck; the
bench's own Python client is measured against the same endpoint.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from bench.common import PYTHON, Child, database, free_port, quick, wait_port
from bench.scenarios import Run, log, make_target, sink

WRK_THREADS = 2
WRK_CONNECTIONS = 32
# The latency target is read at the target rate: the bench client offers this many POSTs a
# second, open loop, and times each from when it was due to go out. wrk's closed loop instead
# shows the most the service takes, where latency is just connections / rate.
PACED_RATE = 1000.0
PACED_CONNECTIONS = 64

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    if match := re.search(r"Requests/sec:\s+([\d.]+)", output):
        figures["wrk_requests_per_s"] = float(match.group(1))
    if match := re.search(r"(\d+) requests in ([\d.]+\w+)", output):
        figures["wrk_requests"] = int(match.group(1))
    for percent in ("50", "75", "90", "99"):
        if match := re.search(rf"^\s+{percent}%\s+(\S+)", output, re.MULTILINE):
            figures[f"wrk_latency_p{percent}_s"] = _seconds(match.group(1))
    match = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    figures["wrk_non_2xx"] = int(match.group(1)) if match else 0
    if match := re.search(r"Socket errors: (.*)", output):
        figures["wrk_socket_errors"] = match.group(1).strip()
    return figures


def wrk(urls: list[str], duration_s: float, body: dict[str, Any], directory: Any) -> dict[str, Any]:
    """wrk against one URL, or spread over several processes' URLs (same path): then one
    thread per URL, each on its own port, and the connections split evenly between them."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk not found: apt-get install -y wrk")
    threads = WRK_THREADS if len(urls) == 1 else len(urls)
    connections = WRK_CONNECTIONS - WRK_CONNECTIONS % threads
    script = directory / "post.lua"
    ports = [urlsplit(url).port for url in urls] if len(urls) > 1 else []
    script.write_text(_post_script(body) + _spread_script(ports))
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{int(duration_s)}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(script),
        urls[0],
    ]
    done = subprocess.run(  # noqa: S603
        argv, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    (directory / "wrk.txt").write_text(done.stdout + done.stderr)
    figures = parse_wrk(done.stdout)
    figures["wrk_command"] = " ".join(argv)
    return figures


def _spread_script(ports: list[int | None]) -> str:
    """wrk's setup(): thread n connects to the n-th port (wrk calls it once per thread, in
    order, before any request)."""
    if not ports:
        return ""
    listed = ", ".join(str(port) for port in ports)
    return (
        f"local ports = {{{listed}}}\n"
        "local threads = 0\n"
        "function setup(thread)\n"
        "  threads = threads + 1\n"
        '  thread.addr = wrk.lookup("127.0.0.1", tostring(ports[threads]))[1]\n'
        "end\n"
    )


def _post_script(body: dict[str, Any]) -> str:
    """wrk's Lua script: POST body, with its "email" made unique per request (each wrk thread
    counts on its own, so an address comes at most once per thread): the service allows
    reminders.max_pending_per_address scheduled reminders per recipient, and checks that on
    every POST, which the figures should include."""
    head = 'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    if "email" not in body:
        return head + f"wrk.body = {json.dumps(json.dumps(body))}\n"
    template = json.dumps({**body, "email": "bench-wrk-%d@example.com"})
    return (
        head + "local counter = 0\n"
        f"local template = {json.dumps(template)}\n"
        "request = function()\n"
        "  counter = counter + 1\n"
        "  return wrk.format(nil, nil, nil, string.format(template, counter))\n"
        "end\n"
    )


def python_client(url: str, duration_s: float) -> dict[str, Any]:
    argv = ["ceiling", "--url", url, "--duration", str(duration_s)]
    result = _bench_client([*argv, "--concurrency", str(WRK_CONNECTIONS)], duration_s + 60)
    return {
        "python_client_requests_per_s": result["requests_per_s"],
        "python_client_latency_p50_s": result["latency_p50_s"],
        "python_client_latency_p99_s": result["latency_p99_s"],
        "python_client_errors": result["errors"],
    }


def paced_client(urls: list[str], duration_s: float) -> dict[str, Any]:
    targets = [flag for url in urls for flag in ("--url", url)]
    argv = ["paced", *targets, "--rate", str(PACED_RATE), "--duration", str(duration_s)]
    # A target slower than the offered rate takes several times the duration to answer all.
    result = _bench_client([*argv, "--connections", str(PACED_CONNECTIONS)], duration_s * 10 + 120)
    return {f"paced_{name}": value for name, value in result.items()}


def _bench_client(argv: list[str], timeout_s: float) -> dict[str, Any]:
    """Run a bench.client command; the summary it prints last, as a dict."""
    done = subprocess.run(  # noqa: S603
        [PYTHON, "-m", "bench.client", *argv],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def enqueue_run(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    duration = 5.0 if quick() else 15.0
    body = {
        "email": "bench@example.com",
        "remind_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        "subject": "Bench",
        "message": "A benchmark reminder.",
    }
    spread = run.processes > 1
    params = {
        "duration_s": duration,
        "processes": run.processes,
        "wrk_threads": run.processes if spread else WRK_THREADS,
        "wrk_connections": WRK_CONNECTIONS - WRK_CONNECTIONS % run.processes,
        "body": "POST /subscribe, the same JSON each time but for a new address, due in 30 days",
        "limit": "the same wrk command against a no-op FastAPI POST endpoint, one uvicorn worker",
        "paced": f"{PACED_RATE:g} POST/s offered for the same duration over "
        f"{PACED_CONNECTIONS} connections (bench client), latency from each request's due time",
    }
    figures: dict[str, Any] = {}
    if run.target == "limit":
        port = free_port()
        noop = Child(
            "noop",
            [
                PYTHON,
                "-m",
                "uvicorn",
                "bench.noop.app:app",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            run.directory / "noop.log",
        )
        try:
            if not wait_port(port, 20):
                raise RuntimeError(f"the no-op app did not start:\n{noop.tail()}")
            url = f"http://127.0.0.1:{port}/noop"
            figures.update(wrk([url], duration, body, run.directory))
            time.sleep(1)
            figures.update(python_client(url, duration))
            log(
                f"client ceiling: wrk {figures.get('wrk_requests_per_s')}/s, bench Python client "
                f"{figures['python_client_requests_per_s']:.0f}/s"
            )
        finally:
            noop.stop()
        return params, figures
    with (
        sink(run.directory) as (sink_port, _, _),
        database(run.db, run.directory, run.target) as url,
    ):
        server = make_target(run, url, sink_port)
        try:
            figures["startup_s"] = server.start()
            urls = [f"{process}/subscribe" for process in server.urls]
            figures.update(wrk(urls, duration, body, run.directory))
            time.sleep(1)
            figures.update(paced_client(server.urls, duration))
            server.record_rss()
            figures["stored_after_run"] = server.pending()
            figures["peak_rss_mb"] = max(server.peak_rss, default=0) / 2**20 or None
            log(
                f"{run.target}: wrk {figures.get('wrk_requests_per_s')}/s, p99 "
                f"{figures.get('wrk_latency_p99_s')} s, non-2xx {figures.get('wrk_non_2xx')}; "
                f"paced {PACED_RATE:g}/s: p99 {figures['paced_latency_p99_s']:.4f} s, "
                f"max {figures['paced_latency_max_s']:.4f} s, errors {figures['paced_errors']}"
            )
        finally:
            server.stop()
    return params, figures
