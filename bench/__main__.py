"""Command line: `python -m bench run SCENARIO --db sqlite|postgres [--target ...]`,
`python -m bench all`, `python -m bench report`.

Scenarios: storm, tasks, spread, crash, enqueue, mixed, failover, scale. Targets:
scheduler_app, baseline, limit (default: all three; tasks and failover run on scheduler_app
alone). `--processes 3` runs storm or enqueue on three scheduler_app processes of one
database. BENCH_QUICK=1 runs smaller numbers and writes to bench/results/quick/ instead of
bench/results/.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bench import report
from bench.common import RESULTS, machine, quick, service_code, write_json
from bench.scenarios import SCENARIOS, SKIPPED, cleanup, log, run_directory

ALL_TARGETS = ("scheduler_app", "baseline", "limit")
# scale and enqueue have no limit column of their own: enqueue measures the client ceiling
# against a no-op endpoint as its limit, scale has none. failover is scheduler_app's alone.
TARGETS_BY_SCENARIO = {"scale": ("scheduler_app", "baseline"), "failover": ("scheduler_app",)}
# Scenarios that run on several scheduler_app processes with --processes N.
MULTI_PROCESS = ("storm", "enqueue")


def results_dir() -> Any:
    return RESULTS / "quick" if quick() else RESULTS


@dataclass(frozen=True)
class Options:
    """What some scenarios take from the command line."""

    keep: bool = False
    # scale: pending reminders.
    size: int | None = None
    # storm, enqueue: scheduler_app processes on the one database.
    processes: int = 1
    # failover: leader kills of each kind, SIGTERMs, and the lease (None: the default).
    kills: int = 10
    lease_s: float | None = None


def run_one(scenario: str, db: str, target: str, options: Options) -> bool:
    size = options.size
    name = scenario if size is None else f"scale-{_size_name(size)}"
    if options.processes > 1:
        name = f"{scenario}-{options.processes}p"
    if (scenario, target) in SKIPPED:
        log(f"=== {name} on {db}: {target} skipped: {SKIPPED[(scenario, target)]} ===")
        return True
    log(f"=== {name} on {db}: {target} ===")
    began = time.time()
    code = service_code()
    load_before = os.getloadavg()
    with run_directory(name, db, target, options.processes, options.kills, options.lease_s) as run:
        try:
            if scenario == "scale":
                from bench.scale import scale_run

                params, figures = scale_run(run, size or 100_000)
            else:
                params, figures = SCENARIOS[scenario](run)
            ok = True
        except Exception as exc:
            traceback.print_exc()
            params, figures = {}, {"error": f"{type(exc).__name__}: {exc}"}
            ok = False
        result = {
            "scenario": name,
            "db": db,
            "target": target,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - began, 1),
            "quick": quick(),
            "parameters": params,
            "figures": figures,
            "notes": run.notes,
            "machine": machine(),
            "service_code_at_start": code,
            # Others may use the machine too: a busy machine shows here.
            "load_average_1_5_15_min": {"start": load_before, "end": os.getloadavg()},
            "work_directory": str(run.directory),
        }
        write_json(results_dir() / f"{name}-{db}-{target}.json", result)
        cleanup(run, keep=options.keep or not ok)
    return ok


def _size_name(size: int) -> str:
    if size % 1_000_000 == 0:
        return f"{size // 1_000_000}m"
    if size % 1000 == 0:
        return f"{size // 1000}k"
    return str(size)


def scale_sizes() -> list[int]:
    if quick():
        return [10_000]
    sizes = [100_000]
    if os.environ.get("BENCH_SCALE_1M", "1") not in ("", "0"):
        sizes.append(1_000_000)
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("run", help="one scenario on one database")
    one.add_argument("scenario", choices=sorted(SCENARIOS))
    one.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    one.add_argument("--target", choices=ALL_TARGETS, action="append")
    one.add_argument("--size", type=int, help="scale: pending reminders (default 100000)")
    one.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    one.add_argument(
        "--processes",
        type=int,
        default=1,
        help="storm, enqueue: scheduler_app processes on the one database, the load spread "
        "over all (results as SCENARIO-Np; scheduler_app only)",
    )
    one.add_argument("--kills", type=int, default=10, help="failover: kills of each kind")
    one.add_argument("--lease-s", type=float, help="failover: scheduler.lease_s (default 10)")
    every = commands.add_parser("all", help="every scenario on every database")
    every.add_argument("--db", action="append", choices=("sqlite", "postgres"))
    every.add_argument("--scenario", action="append", choices=sorted(SCENARIOS))
    every.add_argument("--keep", action="store_true")
    commands.add_parser("report", help="write results.md from the JSON results")
    args = parser.parse_args()

    ok = True
    if args.command == "run":
        if args.processes < 1 or (args.processes > 1 and args.scenario not in MULTI_PROCESS):
            parser.error(f"--processes N (N > 1) runs {' and '.join(MULTI_PROCESS)} only")
        targets = args.target or TARGETS_BY_SCENARIO.get(args.scenario, ALL_TARGETS)
        if args.processes > 1:
            # The baseline and the limit are one process each; the storm's paired limit runs
            # within scheduler_app's attempts all the same.
            targets = ["scheduler_app"]
        sizes: list[int | None] = [None]
        if args.scenario == "scale":
            sizes = [args.size] if args.size else list(scale_sizes())
        for size in sizes:
            options = Options(args.keep, size, args.processes, args.kills, args.lease_s)
            for target in targets:
                ok &= run_one(args.scenario, args.db, target, options)
    elif args.command == "all":
        began = time.time()
        order = ["storm", "tasks", "spread", "crash", "enqueue", "mixed", "failover", "scale"]
        chosen = [name for name in order if not args.scenario or name in args.scenario]
        for db in args.db or ["sqlite", "postgres"]:
            for scenario in chosen:
                scenario_sizes: list[int | None] = (
                    list(scale_sizes()) if scenario == "scale" else [None]
                )
                for size in scenario_sizes:
                    for target in TARGETS_BY_SCENARIO.get(scenario, ALL_TARGETS):
                        ok &= run_one(scenario, db, target, Options(args.keep, size))
        log(f"all scenarios done in {(time.time() - began) / 60:.1f} min")
    path = report.write(results_dir())
    log(f"table written to {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
