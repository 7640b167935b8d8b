"""The SMTP sink, a process of its own: accepts every message and records, per message, its
receive time, X-Reminder-Id and Message-ID, one JSON line each (flushed at once, so the
harness can count arrivals while a run is under way).

Run: `python -m bench.sink --port 2525 --out received.jsonl`. Stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import signal
import time
from pathlib import Path
from typing import IO, Any

from aiosmtpd.smtp import SMTP


class Recorder:
    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        received = time.time()
        reminder_id, message_id = _headers(envelope.content)
        self.out.write(
            json.dumps({"t": received, "id": reminder_id, "message_id": message_id}) + "\n"
        )
        self.out.flush()
        self.count += 1
        return "250 OK"


def _headers(content: bytes | str) -> tuple[str | None, str | None]:
    """X-Reminder-Id and Message-ID from the header block, without parsing the whole message."""
    raw = content if isinstance(content, bytes) else content.encode()
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    reminder_id = message_id = None
    for line in head.splitlines():
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"x-reminder-id":
            reminder_id = value.strip().decode(errors="replace")
        elif lowered == b"message-id":
            message_id = value.strip().decode(errors="replace")
    return reminder_id, message_id


async def serve(host: str, port: int, out_path: Path, ready_path: Path | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with out_path.open("a") as out:
        recorder = Recorder(out)
        server = await loop.create_server(
            # hostname given: aiosmtpd would otherwise resolve the FQDN for every connection.
            lambda: SMTP(recorder, hostname="bench-sink", ident="bench-sink"),
            host=host,
            port=port,
            backlog=4096,
        )
        if ready_path is not None:
            ready_path.write_text("ready\n")  # noqa: ASYNC240 (once, before any traffic)
        await stop.wait()
        server.close()
        print(f"bench-sink: {recorder.count} message(s) received", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ready", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(serve(args.host, args.port, args.out, args.ready))


if __name__ == "__main__":
    main()
