"""The baseline: FastAPI + APScheduler the way tutorials set it up.

An AsyncIOScheduler with a SQLAlchemyJobStore and every default left alone (misfire grace 1 s,
job store I/O on the event loop, one asyncio task per due job), started in the lifespan.
POST /subscribe adds a DateTrigger job whose coroutine sends one e-mail over a new SMTP
connection with aiosmtplib. Nothing here is tuned: it is the yardstick, not a competitor.

Run: `BASELINE_DATABASE_URL=sqlite:///jobs.sqlite uvicorn bench.baseline.app:app`.
Environment: BASELINE_DATABASE_URL, BASELINE_SMTP_HOST, BASELINE_SMTP_PORT.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import aiosmtplib
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from fastapi import FastAPI
from pydantic import BaseModel

DATABASE_URL = os.environ.get("BASELINE_DATABASE_URL", "sqlite:///jobs.sqlite")
SMTP_HOST = os.environ.get("BASELINE_SMTP_HOST", "127.0.0.1")
SMTP_PORT = int(os.environ.get("BASELINE_SMTP_PORT", "1025"))

scheduler = AsyncIOScheduler(jobstores={"default": SQLAlchemyJobStore(url=DATABASE_URL)})


async def send_reminder(reminder_id: str, email: str, subject: str, body: str) -> None:
    message = EmailMessage()
    message["From"] = "reminders@localhost"
    message["To"] = email
    message["Subject"] = subject
    message["Message-ID"] = f"<reminder-{reminder_id}@localhost>"
    message["X-Reminder-Id"] = reminder_id
    message.set_content(body or "This is your reminder.")
    await aiosmtplib.send(message, hostname=SMTP_HOST, port=SMTP_PORT, start_tls=False)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    scheduler.start()
    yield
    scheduler.shutdown()


app = FastAPI(lifespan=lifespan)


class Subscription(BaseModel):
    email: str
    remind_at: datetime | None = None
    delay_seconds: float | None = None
    subject: str = "Reminder"
    message: str = ""


@app.post("/subscribe", status_code=201)
async def subscribe(subscription: Subscription) -> dict[str, Any]:
    reminder_id = str(uuid.uuid4())
    run_date = subscription.remind_at or datetime.now(UTC) + timedelta(
        seconds=subscription.delay_seconds or 0
    )
    scheduler.add_job(
        send_reminder,
        "date",
        run_date=run_date,
        args=[reminder_id, subscription.email, subscription.subject, subscription.message],
        id=reminder_id,
    )
    return {"id": reminder_id, "remind_at": run_date.isoformat()}


@app.get("/jobs")
async def list_jobs(limit: int = 50, offset: int = 0) -> dict[str, Any]:
    jobs = scheduler.get_jobs()
    page = jobs[offset : offset + limit]
    return {
        "items": [
            {"id": job.id, "next_run_time": job.next_run_time and job.next_run_time.isoformat()}
            for job in page
        ],
        "total": len(jobs),
    }


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
