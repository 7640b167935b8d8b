"""Benchmarks for scheduler_app against a tutorial baseline and a raw-sender limit.

Run `python -m bench --help`, or `make bench` for every scenario.
"""
