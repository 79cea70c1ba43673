"""Run every benchmark in bench/ and write bench/RESULTS.md: one table of every figure with
its baseline ratio, the machine and the date.

Usage: python bench/run_all.py [--quick]   (--quick: smaller workloads, for a smoke run)
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


def main() -> int:
    quick = "--quick" in sys.argv
    rows: list[tuple[str, str, dict[str, object]]] = []
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        args = [
            sys.executable,
            str(script),
            "--json",
            *(QUICK_ARGS.get(script.name, []) if quick else []),
        ]
        print(f"== {script.name}", flush=True)
        started = time.perf_counter()
        done = subprocess.run(args, stdout=subprocess.PIPE, text=True, check=False)
        if done.returncode != 0:
            failed.append(script.name)
            continue
        for name, facts in json.loads(done.stdout).items():
            rows.append((script.name, name, facts))
        print(f"   {time.perf_counter() - started:.0f} s", flush=True)
    lines = [
        "# Benchmark results",
        "",
        f"- machine: {machine()}",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- mode: {'quick (small workloads)' if quick else 'full'}",
        "",
        "| script | figure | value | unit | ratio | baseline |",
        "|---|---|---:|---|---:|---|",
    ]
    for script, name, facts in rows:
        value = facts.get("value")
        ratio = facts.get("ratio")
        lines.append(
            f"| {script} | {name} | {value:,.1f} | {facts.get('unit', '')} | "
            f"{'' if ratio is None else f'{ratio:.2f}x'} | {facts.get('baseline') or ''} |"
        )
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
