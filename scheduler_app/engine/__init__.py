"""The scheduling engine: the only package that imports APScheduler (3.11; see docs/engine.md).

Its policies are plain code: `slots` (job slots), `passes` (when the next pass over the job store
comes). Of APScheduler's private parts it uses:

- `BaseScheduler._process_jobs()`, run in a worker thread (`scheduler.OffLoopScheduler`);
- `BaseExecutor._do_submit_job()`, abstract, implemented (`executor.RegistryExecutor`);
- `SQLAlchemyJobStore._reconstitute_job()`, to restore a stored job
  (`scheduler.QuarantiningJobStore`);

and relies on `_process_jobs` calling a store's `get_due_jobs`, then `remove_job` of the jobs it
submitted, then `get_next_run_time`, under the scheduler's job store lock; and on `_real_add_job`
calling `wakeup()` for each job added.
"""
