"""An HTTP notification (a webhook to another service), sent as a task."""

from __future__ import annotations

from typing import Any

import httpx

from scheduler_app import JobFailure, job


@job("notify_http", max_attempts=8, timeout_s=30)
async def notify_http(url: str, payload: dict[str, Any]) -> int:
    """POST a JSON payload to a URL; retried while the other side fails or is away."""
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(url, json=payload)
    except httpx.HTTPError as exc:
        raise JobFailure(f"{type(exc).__name__}: {exc}", transient=True) from exc
    if response.status_code >= 500 or response.status_code == 429:
        raise JobFailure(f"{url} answered {response.status_code}", transient=True)
    if response.status_code >= 400:
        # The request itself is wrong: sending it again would get the same answer.
        raise JobFailure(f"{url} answered {response.status_code}", transient=False)
    return response.status_code
