"""Run every benchmark in bench/ and write bench/RESULTS.md: one table of every figure with
its baseline ratio, the machine and the date.

Usage: python bench/run_all.py [--quick | --full]

The default (`make bench`) sizes each workload so that the whole run stays under ten
minutes on a two-core machine, and says which figures are extrapolated; `--full` runs each
script at its own defaults (the 1,000,000-event audit measured, not extrapolated: about
ten minutes more the first time, while its log is generated and cached in bench/out/);
`--quick` is a smoke run with small workloads.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.common import machine  # noqa: E402

# `make bench`: what differs from each script's own defaults.
STANDARD_ARGS = {
    "bench_audit.py": ["--events", "200000"],
}
QUICK_ARGS = {
    "bench_ledger.py": ["--transfers", "1000", "--single", "100"],
    "bench_audit.py": ["--events", "20000"],
    "bench_gateway.py": ["--transfers", "1000", "--reads", "2000"],
    "bench_hub.py": ["--quick"],
    "bench_kernels.py": ["--quick"],
    "bench_verification.py": ["--quick"],
    "bench_tolerance.py": ["--quick"],
    "bench_settlement_gas.py": ["--accounts", "100", "--jobs", "1000"],
}


def _number(value: object) -> str:
    """Thousands separated with one decimal, but small figures (tolerance gaps of 1e-4)
    with three significant digits instead of a rounded 0.0."""
    if not isinstance(value, int | float):
        return str(value)
    if value != 0 and abs(value) < 10:
        return f"{value:.3g}"
    return f"{value:,.1f}"


def main() -> int:
    quick = "--quick" in sys.argv
    full = "--full" in sys.argv
    sized = QUICK_ARGS if quick else {} if full else STANDARD_ARGS
    run_started = time.perf_counter()
    rows: list[tuple[str, str, dict[str, object]]] = []
    failed = []
    took: dict[str, float] = {}
    for script in sorted(HERE.glob("bench_*.py")):
        args = [
            sys.executable,
            str(script),
            "--json",
            *sized.get(script.name, []),
        ]
        print(f"== {script.name}", flush=True)
        started = time.perf_counter()
        done = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=False)
        if done.returncode != 0:
            failed.append(script.name)
            continue
        for name, facts in json.loads(done.stdout).items():
            rows.append((script.name, name, facts))
        took[script.name] = time.perf_counter() - started
        print(f"   {took[script.name]:.0f} s", flush=True)
    lines = [
        "# Benchmark results",
        "",
        f"- machine: {machine()}",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- mode: {'quick (small workloads)' if quick else 'full' if full else 'standard'}",
        f"- whole run: {time.perf_counter() - run_started:.0f} s",
        "",
        "| script | figure | value | unit | ratio | baseline |",
        "|---|---|---:|---|---:|---|",
    ]
    for script, name, facts in rows:
        value = facts.get("value")
        ratio = facts.get("ratio")
        lines.append(
            f"| {script} | {name} | {_number(value)} | {facts.get('unit', '')} | "
            f"{'' if ratio is None else f'{ratio:.2f}x'} | {facts.get('baseline') or ''} |"
        )
    lines += ["", "| script | seconds |", "|---|---:|"]
    lines += [f"| {name} | {seconds:.0f} |" for name, seconds in took.items()]
    if failed:
        lines += ["", f"Failed (no figures): {', '.join(failed)}"]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
