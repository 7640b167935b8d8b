"""Recurring jobs: crontab expressions, config.yaml entries, and reconciling them with the store.

Stored cron jobs pickle their trigger as `scheduler_app.cron.CrontabTrigger`, so it is
re-exported here.
"""

from scheduler_app.cron.crontab import CrontabTrigger

__all__ = ["CrontabTrigger"]
