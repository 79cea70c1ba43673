"""The demo's report folder: `report.md` (the checks, the facts, the timings) and PNG
plots — the loss curve of the verified training run, every participant's available BLACK
at each stage of the story, and what the verifiers decided."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from node.demo import BLACK, Story


def write_report(story: Story, directory: Path) -> Path:
    """Write the report into `directory` (made if needed); the path of report.md."""
    directory.mkdir(parents=True, exist_ok=True)
    plots = _plots(story, directory)
    facts = story.facts
    lines = [
        "# BlackTail demo report",
        "",
        f"Result: **{'every check held' if story.ok else 'a check failed'}** "
        f"({sum(c.ok for c in story.checks)}/{len(story.checks)} checks).",
        "",
        "## Checks",
        "",
        "| check | result | detail |",
        "|---|---|---|",
        *(f"| {c.name} | {'✓' if c.ok else '✗'} | {c.detail} |" for c in story.checks),
        "",
        "## The story in figures",
        "",
    ]
    if "accuracy" in facts:
        lines.append(f"- held-out accuracy of the verified model: {100 * facts['accuracy']:.1f}%")
    if "job" in facts:
        lines.append(
            f"- job: `{facts['job']}`, {len(story.segments)} segments, {len(story.losses)} steps"
        )
    if "epoch" in facts:
        e = facts["epoch"]
        lines.append(
            f"- epoch {e.epoch} settled on-chain: root `{e.root}`, log head "
            f"{e.log_size} events `{e.log_root}`, tx `{e.tx_hash}`"
        )
    if "audit" in facts:
        a = facts["audit"]
        lines.append(
            f"- audit: {a['events']} events, {a['commands']} commands, "
            f"{a['signatures_checked']} signatures checked"
        )
    for name, value in (facts.get("market") or {}).items():
        lines.append(f"- market: {name}: {value}")
    lines += ["", "## Participants", "", "| name | role | address |", "|---|---|---|"]
    for name, (role, address) in facts.get("participants", {}).items():
        lines.append(f"| {name} | {role} | `{address}` |")
    lines += ["", "## Plots", ""]
    lines += [f"![{title}]({path.name})" for title, path in plots]
    lines += ["", "## Time", "", "| reached | seconds since start |", "|---|---:|"]
    lines += [f"| {stage} | {seconds:.1f} |" for stage, seconds in story.seconds.items()]
    lines += ["", "## Verifier decisions", ""]
    lines += [f"- {v['kind']} {v['outcome']}: {v['reason'] or 'ok'}" for v in story.verdicts]
    path = directory / "report.md"
    path.write_text("\n".join(lines) + "\n")
    (directory / "checks.json").write_text(
        json.dumps([c.__dict__ for c in story.checks], indent=2) + "\n"
    )
    return path


def _plots(story: Story, directory: Path) -> list[tuple[str, Path]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: list[tuple[str, Path]] = []

    def save(figure: Any, name: str, title: str) -> None:
        path = directory / name
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)
        made.append((title, path))

    if story.losses:
        figure, axes = plt.subplots(figsize=(7, 3.5))
        axes.plot(range(len(story.losses)), story.losses, color="#2563eb", linewidth=1)
        for boundary in range(
            0, len(story.losses), max(1, len(story.losses) // max(1, len(story.segments)))
        ):
            axes.axvline(boundary, color="#cbd5e1", linewidth=0.6)
        axes.set(
            xlabel="step",
            ylabel="training loss",
            title="Loss of the verified run (segments marked)",
        )
        save(figure, "loss.png", "Loss curve")
    if story.balances:
        figure, axes = plt.subplots(figsize=(7, 3.5))
        names = list(story.balances[0][1])
        stages = [stage for stage, _ in story.balances]
        for name in names:
            axes.plot(
                stages, [held[name] / BLACK for _, held in story.balances], marker="o", label=name
            )
        axes.set(ylabel="available BLACK", title="Balances through the story")
        axes.legend(fontsize=7, ncol=4)
        axes.tick_params(axis="x", labelrotation=15, labelsize=8)
        save(figure, "balances.png", "Balances over time")
    if story.verdicts:
        counts = Counter(f"{v['kind']}: {v['outcome']}" for v in story.verdicts)
        figure, axes = plt.subplots(figsize=(6, 3))
        labels = sorted(counts)
        colors = ["#dc2626" if ("rejected" in k or "fraud" in k) else "#16a34a" for k in labels]
        axes.bar(labels, [counts[k] for k in labels], color=colors)
        axes.set(ylabel="count", title="Verification outcomes")
        save(figure, "verification.png", "Verification outcomes")
    return made
