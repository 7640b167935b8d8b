"""This deployment's own job functions: the `job_modules` setting names this package by default.

Each module here registers functions with @job; tasks (POST /tasks, DurableTasks) and config.yaml
name them by their job name. The two below are worked examples.
"""
