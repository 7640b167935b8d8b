"""Where jobs stored before the engine package existed find their entry point.

A stored APScheduler job names its function by import path ("scheduler_app.executor:
registered_job"); those written by earlier versions still name this module.
"""

from scheduler_app.engine.executor import registered_job

__all__ = ["registered_job"]
