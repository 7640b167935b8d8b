"""Prometheus metrics of the running service (GET /metrics)."""

from scheduler_app.metrics.prometheus import CONTENT_TYPE, Metrics

__all__ = ["CONTENT_TYPE", "Metrics"]
