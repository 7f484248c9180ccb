"""`python -m simulation`: simulate a scenario (or run it on real toy servers) and print its figures."""

from __future__ import annotations

import argparse
import json
import sys

from orchestrator.errors import OrchestratorError

DESCRIPTION = """\
Simulate a shared Triton cluster: servers with Triton's dynamic batcher, `predict` clients that
each run the client's real dispatch core in simulated time, and faults (kill, freeze, stuck model,
restart with other weights, servers added or removed through discovery). The scenario is a YAML
file (see the docs page "Scale and capacity planning"). The result is one JSON object: makespan,
each job's start and end, rows sent and needed per model, the duplicate fraction, the servers'
busy fraction, queue-full answers and the wall time.
"""

EXIT_CODES = """\
exit codes: 0 done; 2 bad scenario or usage (one line naming the key); 1 other failure.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulation", description=DESCRIPTION,
                                     epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one scenario (simulated, or --real on toy servers)",
                         description=DESCRIPTION, epilog=EXIT_CODES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("scenario", help="the scenario YAML file")
    run.add_argument("--json", action="store_true",
                     help="print the result as one JSON object (default: a short summary)")
    run.add_argument("--real", action="store_true",
                     help="run it on this machine: real tritonservers serving the toy models and real "
                     "`orchestrator predict` processes (small scenarios only)")
    run.add_argument("--progress", action="store_true",
                     help="report simulated time and events per second on stderr while running")
    run.add_argument("--series", metavar="FILE",
                     help="also write per-second series (busy servers, requests sent, queue-full "
                     "answers) as JSON to FILE")
    study = sub.add_parser("study", help="the shared-cluster study: one run per policy, one table",
                           description="Simulate many H200-like servers and many users' runs "
                           "(90% bulk, 10% small high-priority jobs) with a mass kill, frozen and "
                           "added servers, once per policy, and print the goals side by side.")
    study.add_argument("--servers", type=int, default=100, help="servers (default 100)")
    study.add_argument("--clients", type=int, default=1000, help="client runs (default 1000)")
    study.add_argument("--duration", type=float, default=3600.0,
                       help="simulated seconds (default 3600)")
    study.add_argument("--scale", type=float, default=1.0,
                       help="multiply every job's frames (default 1: 10^5-10^6 bulk, 10^3-10^4 small)")
    study.add_argument("--policies", nargs="*", help="policy names to compare (default: all)")
    study.add_argument("--json", metavar="FILE", help="write the figures and series to FILE")
    return parser


def summary(result: dict) -> str:
    lines = [f"{result['mode']}: makespan {result['makespan_s']:.2f} s, busy fraction "
             f"{result['busy_fraction']:.3f}, duplicate rows {result['duplicate_row_fraction']:.4f}, "
             f"queue-full answers {result['queue_full_answers']}, wall {result['wall_s']:.2f} s"]
    for job in result["jobs"]:
        end = "unfinished" if job["end_s"] is None else f"{job['end_s']:.2f} s"
        failed = f" (failed: {job['failed']})" if job.get("failed") else ""
        lines.append(f"  client {job['client']} ({job['priority']}, {job['frames']} frames): "
                     f"{job['start_s']:.2f} s -> {end}{failed}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "study":
        from simulation.study import run_study

        try:
            run_study(args)
        except OrchestratorError as exc:
            print(f"simulation: {exc}", file=sys.stderr)
            return exc.exit_code
        return 0
    try:
        from simulation.scenario import load

        scenario = load(args.scenario)
        if args.real:
            from simulation.real import run_real

            result = run_real(scenario)
        else:
            from simulation.world import simulate

            result = simulate(scenario, progress=args.progress, series_to=args.series)
    except OrchestratorError as exc:
        print(f"simulation: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("simulation: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(result) if args.json else summary(result))
    return 0
