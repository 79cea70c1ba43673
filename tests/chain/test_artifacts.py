"""The committed artifacts in chain/build/ are exactly what a fresh compile gives.

Compiling needs node and the npm toolchain (`npm ci`). Without them the test is skipped,
unless CI is set or BLACKTAIL_REQUIRE_NODE=1, where it fails: a CI machine that lost its
node must not pass by skipping the one check that ties the artifacts to the sources.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

from chain.artifacts import BUILD_DIR, CONTRACT_NAMES

ROOT = Path(__file__).resolve().parents[2]
REQUIRE_NODE_ENV = "BLACKTAIL_REQUIRE_NODE"
compile_seconds_max = 300


def _node_required() -> bool:
    value = os.environ.get(REQUIRE_NODE_ENV, "")
    if value not in ("", "0", "1"):
        raise pytest.UsageError(f"{REQUIRE_NODE_ENV}: expected 0 or 1, got {value!r}")
    return value == "1" or bool(os.environ.get("CI"))


def _unavailable(reason: str) -> NoReturn:
    if _node_required():
        pytest.fail(f"{reason} (CI or {REQUIRE_NODE_ENV}=1 requires it)", pytrace=False)
    pytest.skip(reason)


def _compile(out: Path) -> None:
    # Parsed first, so that a mistyped value fails here rather than only on a machine
    # where node happens to be missing.
    _node_required()
    node = shutil.which("node")
    if node is None:
        _unavailable("node is not installed: cannot compile the contracts")
    if not (ROOT / "node_modules" / "solc" / "package.json").exists():
        _unavailable("node_modules/solc is missing: run `npm ci` (or `make contracts`)")
    done = subprocess.run(
        [node, str(ROOT / "chain" / "compile.js"), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=compile_seconds_max,
        check=False,
    )
    assert done.returncode == 0, f"compile.js failed:\n{done.stderr}"


@pytest.mark.slow
def test_committed_artifacts_match_a_fresh_compile(tmp_path: Path) -> None:
    """Compiling chain/contracts/ anew gives byte-identical chain/build/*.json, no more, no
    fewer; a difference names the file (run `make contracts` and commit the result)."""
    _compile(tmp_path)
    fresh = {path.name: path.read_bytes() for path in tmp_path.glob("*.json")}
    committed = {path.name: path.read_bytes() for path in BUILD_DIR.glob("*.json")}
    assert {f"{name}.json" for name in CONTRACT_NAMES} <= set(fresh)
    missing = sorted(set(fresh) - set(committed))
    stale = sorted(set(committed) - set(fresh))
    differing = sorted(
        name for name in set(fresh) & set(committed) if fresh[name] != committed[name]
    )
    assert not missing, f"not committed in chain/build/: {missing} (run `make contracts`)"
    assert not stale, f"in chain/build/ but no longer compiled: {stale}"
    assert not differing, (
        f"chain/build/ differs from a fresh compile: {differing} (run `make contracts`)"
    )
