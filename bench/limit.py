"""The limit, a process of its own: a raw sender that pushes the scenario's messages straight
into the sink over persistent SMTP connections (as many as scheduler_app's default
`mail.smtp.pool_size`), each message at its due time (or at once
when it is overdue), as fast as the sink accepts them. No HTTP, no database, no scheduler, and
every message is composed before the clock starts: what the same workload costs when only the
mail hop is left.

The first message falls due `--lead` seconds after the last one is composed (composing 5,000
took from about 2 to 9 seconds, by machine); the sender prints that instant as a JSON line
(`due_start`, and `not_before` when `--downtime` holds it back further) before it sends anything.

Run: `python -m bench.limit --port 2525 --count 5000 --out sent.jsonl`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from scheduler_app.settings import SmtpSettings


def message(reminder_id: str, i: int) -> bytes:
    built = EmailMessage()
    built["From"] = "limit <limit@localhost>"
    built["To"] = f"bench{i}@example.com"
    built["Subject"] = f"Bench {i}"
    built["Message-ID"] = f"<reminder-{reminder_id}@localhost>"
    built["X-Reminder-Id"] = reminder_id
    built.set_content("A benchmark reminder.")
    return built.as_bytes(policy=built.policy.clone(linesep="\r\n"))


async def run(args: argparse.Namespace) -> None:
    ids = [str(uuid.uuid4()) for _ in range(args.count)]
    composed = [message(reminder_id, i) for i, reminder_id in enumerate(ids)]
    due_start = time.time() + args.lead
    queue: asyncio.Queue[tuple[float, str, bytes]] = asyncio.Queue()
    with args.out.open("w") as out:
        for i, (reminder_id, data) in enumerate(zip(ids, composed, strict=True)):
            due = due_start + args.spread * i / args.count
            queue.put_nowait((due, f"bench{i}@example.com", data))
            out.write(json.dumps({"i": i, "due": due, "id": reminder_id, "status": 201}) + "\n")
    not_before = due_start + args.downtime
    print(json.dumps({"due_start": due_start, "not_before": not_before}), flush=True)
    await asyncio.sleep(max(0.0, not_before - time.time()))

    async def worker() -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=args.port, start_tls=False, timeout=30)
        await smtp.connect()
        while True:
            try:
                due, recipient, data = queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            wait = due - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await smtp.sendmail("limit@localhost", [recipient], data)
        await smtp.quit()

    began, began_cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(args.connections)))
    report = {
        "sent": args.count,
        "elapsed_s": time.perf_counter() - began,
        "cpu_s_sending": time.process_time() - began_cpu,
    }
    print(json.dumps(report), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--lead", type=float, default=1.0, help="s from composed to first due")
    parser.add_argument("--spread", type=float, default=0.0)
    parser.add_argument("--downtime", type=float, default=0.0, help="s after first due: start")
    parser.add_argument(
        "--connections", type=int, default=SmtpSettings.model_fields["pool_size"].default
    )
    parser.add_argument("--out", type=Path, required=True)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
