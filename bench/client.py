"""The load client, a process of its own: a small keep-alive HTTP/1.1 client on raw asyncio
streams (several times faster than httpx, see the ceiling check), with three commands:

- `post`: POST /subscribe `--count` times over `--concurrency` connections (spread over every
  `--url` given: the processes of a cluster), reminder i due at `--due-start + i * --spread /
  --count`; records id, due time, status and latency per request.
  With `--job NAME` (and the admin `--token`), POST /tasks instead: task i of that job, its
  arguments `email` and `index`, with `run_at` at the same due time.
- `probe`: steady, paced requests (GET /healthz, GET /jobs?limit=50, POST /subscribe far in the
  future) until SIGTERM or `--duration`; records time, route, status and latency per request.
- `ceiling`: as many POSTs as it can for `--duration` against one URL.
- `paced`: POST /subscribe at a fixed `--rate` for `--duration` (open loop, over a pool of
  connections to every `--url` given), each latency counted from the moment the request was
  due to go out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

TIMEOUT_S = 60.0


class HttpError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened after an error or a close."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        try:
            return await asyncio.wait_for(self._request(method, path, body, headers), TIMEOUT_S)
        except BaseException:
            self.close()
            raise

    async def _request(
        self, method: str, path: str, body: bytes, headers: dict[str, str] | None
    ) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if body or method in ("POST", "PUT"):
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        fields = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            payload = await self.reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            payload = await self._chunks()
        else:
            payload = await self.reader.read()
            self.close()
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, payload

    async def _chunks(self) -> bytes:
        assert self.reader is not None
        parts = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await self.reader.readexactly(size + 2)
            if size == 0:
                return b"".join(parts)
            parts.append(chunk[:-2])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def subscribe_body(i: int, due: datetime) -> bytes:
    return json.dumps(
        {
            "email": f"bench{i}@example.com",
            "remind_at": due.isoformat(),
            "subject": f"Bench {i}",
            "message": "A benchmark reminder.",
        }
    ).encode()


def task_body(job: str, i: int, due: datetime) -> bytes:
    return json.dumps(
        {
            "job": job,
            "args": {"email": f"bench{i}@example.com", "index": i},
            "run_at": due.isoformat(),
        }
    ).encode()


async def post(args: argparse.Namespace) -> None:
    addresses = [_address(url) for url in args.url]
    start = datetime.fromtimestamp(args.due_start, UTC)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.count):
        queue.put_nowait(i)
    latencies: list[float] = []
    ok = 0
    auth = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    path = "/tasks" if args.job else "/subscribe"
    with args.out.open("w") as out:

        async def worker(number: int) -> None:
            nonlocal ok
            # Connection by connection over every URL given (a cluster's processes).
            connection = Connection(*addresses[number % len(addresses)])
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    connection.close()
                    return
                due = start + timedelta(seconds=args.spread * i / args.count)
                sent = time.time()
                began = time.perf_counter()
                record: dict[str, Any] = {"i": i, "due": due.timestamp(), "sent": sent}
                body = task_body(args.job, i, due) if args.job else subscribe_body(i, due)
                try:
                    status, payload = await connection.request("POST", path, body, auth)
                except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                    record.update(status=0, error=f"{type(exc).__name__}: {exc}")
                else:
                    record["status"] = status
                    if status == 201:
                        record["id"] = json.loads(payload)["id"]
                        ok += 1
                    else:
                        record["error"] = payload[:300].decode(errors="replace")
                latency = time.perf_counter() - began
                record["latency"] = latency
                latencies.append(latency)
                out.write(json.dumps(record) + "\n")

        began = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(args.concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    print(
        json.dumps(
            {
                "requests": args.count,
                "accepted": ok,
                "elapsed_s": elapsed,
                "requests_per_s": args.count / elapsed if elapsed else None,
            }
        ),
        flush=True,
    )


async def probe(args: argparse.Namespace) -> None:
    """Paced, closed-loop probes, one connection per route: a stalled answer shows as latency."""
    host, port = _address(args.url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    auth = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    far = datetime.now(UTC) + timedelta(days=30)
    routes: list[tuple[str, str, str, float]] = []
    if args.health_rate:
        routes.append(("healthz", "GET", "/healthz", args.health_rate))
    if args.jobs_rate:
        routes.append(("jobs", "GET", "/jobs?limit=50", args.jobs_rate))
    if args.post_rate:
        routes.append(("subscribe", "POST", "/subscribe", args.post_rate))
    deadline = time.monotonic() + args.duration
    with args.out.open("w") as out:

        async def loop_route(name: str, method: str, path: str, rate: float) -> None:
            connection = Connection(host, port)
            interval = 1.0 / rate
            next_at = time.monotonic()
            n = 0
            while not stop.is_set() and time.monotonic() < deadline:
                n += 1
                body = subscribe_body(10_000_000 + n, far) if method == "POST" else b""
                began = time.perf_counter()
                at = time.time()
                try:
                    status, _ = await connection.request(method, path, body, auth)
                except (TimeoutError, OSError, asyncio.IncompleteReadError):
                    status = 0
                latency = time.perf_counter() - began
                out.write(
                    json.dumps({"t": at, "route": name, "status": status, "latency": latency})
                )
                out.write("\n")
                out.flush()
                next_at = max(next_at + interval, time.monotonic())
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
            connection.close()

        await asyncio.gather(*(loop_route(*route) for route in routes))


async def ceiling(args: argparse.Namespace) -> None:
    host, port = _address(args.url)
    path = urlsplit(args.url).path or "/"
    body = subscribe_body(0, datetime.now(UTC) + timedelta(days=30))
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + args.duration

    async def worker() -> None:
        nonlocal errors
        connection = Connection(host, port)
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                status, _ = await connection.request("POST", path, body)
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                status = 0
            if status >= 300 or status == 0:
                errors += 1
            latencies.append(time.perf_counter() - began)
        connection.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    print(json.dumps(_summary(latencies, errors, time.perf_counter() - began)), flush=True)


async def paced(args: argparse.Namespace) -> None:
    """Open loop: request i is due at start + i / rate whatever the answers before it, and its
    latency runs from that moment. A server that falls behind keeps every connection busy, and
    the requests that wait for a free connection count their wait: no coordinated omission."""
    addresses = [_address(url) for url in args.url]
    far = datetime.now(UTC) + timedelta(days=30)
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for number in range(args.connections):
        idle.put_nowait(Connection(*addresses[number % len(addresses)]))
    latencies: list[float] = []
    errors = 0

    async def send(i: int, due: float) -> None:
        nonlocal errors
        connection = await idle.get()
        try:
            status, _ = await connection.request("POST", "/subscribe", subscribe_body(i, far))
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            status = 0
        finally:
            idle.put_nowait(connection)
        if status != 201:
            errors += 1
        latencies.append(time.perf_counter() - due)

    count = int(args.rate * args.duration)
    start = time.perf_counter() + 0.2
    sends = []
    for i in range(count):
        due = start + i / args.rate
        if (wait := due - time.perf_counter()) > 0:
            await asyncio.sleep(wait)
        sends.append(asyncio.create_task(send(i, due)))
    await asyncio.gather(*sends)
    summary = _summary(latencies, errors, time.perf_counter() - start)
    summary["offered_per_s"] = args.rate
    summary["latency_max_s"] = max(latencies, default=None)
    print(json.dumps(summary), flush=True)


def _summary(latencies: list[float], errors: int, elapsed: float) -> dict[str, Any]:
    latencies = sorted(latencies)
    return {
        "requests": len(latencies),
        "errors": errors,
        "elapsed_s": elapsed,
        "requests_per_s": len(latencies) / elapsed,
        "latency_p50_s": latencies[len(latencies) // 2] if latencies else None,
        "latency_p99_s": latencies[int(len(latencies) * 0.99)] if latencies else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("post")
    p.add_argument("--url", required=True, action="append", help="again for each process")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--due-start", type=float, required=True, help="epoch seconds")
    p.add_argument("--spread", type=float, default=0.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--job", help="POST /tasks of this job instead of POST /subscribe")
    p.add_argument("--token", help="the admin token (POST /tasks needs it)")
    p.add_argument("--out", type=Path, required=True)
    q = commands.add_parser("probe")
    q.add_argument("--url", required=True)
    q.add_argument("--token")
    q.add_argument("--health-rate", type=float, default=0.0)
    q.add_argument("--jobs-rate", type=float, default=0.0)
    q.add_argument("--post-rate", type=float, default=0.0)
    q.add_argument("--duration", type=float, default=600.0)
    q.add_argument("--out", type=Path, required=True)
    c = commands.add_parser("ceiling")
    c.add_argument("--url", required=True)
    c.add_argument("--duration", type=float, default=10.0)
    c.add_argument("--concurrency", type=int, default=32)
    r = commands.add_parser("paced")
    r.add_argument("--url", required=True, action="append", help="again for each process")
    r.add_argument("--rate", type=float, required=True, help="requests per second")
    r.add_argument("--duration", type=float, default=10.0)
    r.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    command = {"post": post, "probe": probe, "ceiling": ceiling, "paced": paced}[args.command]
    asyncio.run(command(args))


if __name__ == "__main__":
    main()
