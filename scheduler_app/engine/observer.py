"""What the engine tells an observer about the runs it starts: the seam for metrics.

The engine never imports a metrics library: it calls a RunObserver passed in (the runtime's
`scheduler_app.metrics.Metrics`), or NO_OBSERVER where nobody listens.
"""

from __future__ import annotations


class RunObserver:
    """Told by the executor, on the event loop, how each run and each task attempt ended; this
    base hears and does nothing (NO_OBSERVER), an observer overrides what it listens to.

    Calls must be quick and never raise: they sit on the path of every job.
    """

    def run(
        self,
        job: str,
        outcome: str,
        *,
        task: bool,
        lag_s: float | None = None,
        duration_s: float | None = None,
    ) -> None:
        """A run record was completed (or written missed).

        Args:
            job: the job's name for a task's attempt, the scheduled job's id for any other run
                (a recurring job's id is what config.yaml and GET /jobs call it).
            outcome: a RunOutcome: success, error or missed.
            task: whether the run is a task's attempt (see attempt for how that ended).
            lag_s: how long after its scheduled time the run started; None for a run that did
                not start or that an operator asked for.
            duration_s: how long the job function ran; None for a run that did not start.
        """
        return

    def attempt(self, job: str, outcome: str) -> None:
        """A task's attempt ended (job: the job's name); outcome: an AttemptOutcome."""
        return


NO_OBSERVER = RunObserver()
