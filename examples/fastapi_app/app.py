"""A FastAPI app of your own with durable background tasks: the welcome e-mail of a new user
is stored before the response leaves, then sent, retried and never lost.

    uvicorn app:app --app-dir examples/fastapi_app

The routes of scheduler_app (/scheduler/tasks, /scheduler/jobs ...) come along under a prefix.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from pydantic import BaseModel, EmailStr
from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from scheduler_app import DurableTasks, Scheduler, TaskContext, job, load_settings

HERE = Path(__file__).parent
settings = load_settings(os.environ.get("EXAMPLE_CONFIG", HERE / "config.yaml"))
scheduler = Scheduler(settings)
# Your own tables live in the same database, so that a task can be part of your transaction.
engine = create_engine(settings.database_url)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "example_users"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


@job("welcome_user", max_attempts=5)
async def welcome_user(ctx: TaskContext, email: str, name: str) -> str:
    """Write the welcome message where the example can see it (a real app would e-mail it)."""
    assert ctx.task is not None
    # Only to make a crash mid-task easy to show (and to test): 0 unless set.
    await asyncio.sleep(float(os.environ.get("EXAMPLE_WELCOME_DELAY_S", "0")))
    outbox = Path(ctx.settings.state_dir) / "welcomed.txt"
    outbox.parent.mkdir(parents=True, exist_ok=True)
    with outbox.open("a") as log:
        log.write(f"{ctx.task.id} {email} {name}\n")
    return "welcomed"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's own lifespan, with the scheduler's inside it."""
    Base.metadata.create_all(engine)
    async with scheduler.lifespan(app):
        yield
    engine.dispose()


app = FastAPI(lifespan=lifespan)
app.include_router(scheduler.router, prefix="/scheduler")


class UserIn(BaseModel):
    email: EmailStr
    name: str


@app.post("/register")
async def register(user: UserIn, tasks: DurableTasks) -> dict[str, str]:
    """A durable BackgroundTasks: the task is in the database when add_task returns."""
    task_id = await tasks.add_task(welcome_user, user.email, user.name)
    return {"task": task_id}


@app.post("/signup")
def signup(user: UserIn, tasks: DurableTasks, fail: bool = False) -> dict[str, str]:
    """The user row and the task in one transaction: both exist, or neither."""
    with Session(engine) as session:
        session.add(User(email=user.email, name=user.name))
        task_id = tasks.add_task_in(session, welcome_user, user.email, user.name)
        if fail:
            session.rollback()
            return {"task": "none: rolled back"}
        session.commit()
    return {"task": task_id}
