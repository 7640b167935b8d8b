"""A FastAPI app whose POST endpoint does nothing: what the load client can reach at best."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

app = FastAPI()


@app.post("/noop")
async def noop(body: dict[str, Any]) -> dict[str, bool]:
    return {"ok": True}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
