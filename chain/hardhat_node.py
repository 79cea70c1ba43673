"""A real JSON-RPC EVM node on 127.0.0.1 (the npm `hardhat` node), started and stopped here.

Contract tests run the deploy → deposit → settle → claim flow against it through web3's
HTTP provider, to catch what an in-process EVM hides (JSON-RPC encoding, receipts,
gas estimation, nonces). From Python::

    with HardhatNode() as node:
        w3 = Web3(Web3.HTTPProvider(node.url))
        deployer = node.accounts[0]            # .address, .private_key (funded)

From a shell, for a person poking at contracts by hand::

    .venv/bin/python -m chain.hardhat_node             # 127.0.0.1:8545 until Ctrl-C
    .venv/bin/python -m chain.hardhat_node --port 0    # any free port
    .venv/bin/python -m chain.hardhat_node --json      # the same facts as one JSON line
    .venv/bin/python -m chain.hardhat_node --check     # start, check, stop: a smoke test

It prints the URL, the chain id, the funded accounts with their private keys and the
node's log file. The node comes from `node_modules` (`make pytest` or `npm ci` installs
it) and reads `chain/hardhat.config.js`: chain id 31337, the Prague hard fork, automine,
ten accounts of 10,000 ETH from hardhat's public test mnemonic. Those keys are public:
never send value to them on a real network.

The node runs in its own process group, which `stop()` ends (SIGTERM, then SIGKILL after
`stop_timeout_seconds`). A test run must not leave a node behind when it dies, so three
things stop it: `stop()` (the context manager's exit), an `atexit` hook, and a watchdog
process for an interpreter killed outright, which holds the read end of a pipe only this
process writes to and kills the group when the pipe closes without a "stopped" line.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from chain.errors import ChainError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_PATH = Path("chain") / "hardhat.config.js"
HARDHAT_BIN = Path("node_modules") / ".bin" / "hardhat"
HOST = "127.0.0.1"
DEFAULT_SHELL_PORT = 8545

# The same as chain/hardhat.config.js; `start()` checks that the node agrees.
CHAIN_ID = 31337
MNEMONIC = "test test test test test test test test test test test junk"
ACCOUNT_PATH = "m/44'/60'/0'/0/{index}"
ACCOUNT_COUNT = 10
ACCOUNT_BALANCE_WEI = 10_000 * 10**18

start_timeout_seconds = 60.0
stop_timeout_seconds = 10.0
rpc_timeout_seconds = 2.0
poll_interval_seconds = 0.05
# A free port found by binding port 0 can be taken by someone else (another xdist worker)
# before the node binds it; a few fresh tries cover that race.
port_attempts_max = 5
log_tail_bytes_max = 4000

# The watchdog, run by `python -I -c`: it reads its stdin to the end, which comes with our
# "stopped" line after `stop()`, or empty when this process is gone without stopping the
# node, in which case it ends the node's group and deletes its log directory. Inline,
# because importing this module imports web3 (through chain.errors): a second of CPU.
_WATCHDOG_SOURCE = """
import os, shutil, signal, sys, time
pgid, grace_seconds, log_dir = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]

def alive():
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # The orphaned leader may linger as a zombie until its new parent reaps it: dead.
    try:
        with open(f"/proc/{pgid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True

if sys.stdin.buffer.read() != b"stopped\\n":
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace_seconds
        while alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    shutil.rmtree(log_dir, ignore_errors=True)
"""


class HardhatNodeError(ChainError, RuntimeError):
    """The hardhat node could not be started, reached or stopped."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(
            f"{message}\n--- hardhat log (tail) ---\n{log_tail}" if log_tail else message
        )
        self.log_tail = log_tail


class ToolchainMissing(HardhatNodeError, FileNotFoundError):
    """node or the npm packages (hardhat) are not installed."""


@dataclass(frozen=True, slots=True)
class FundedAccount:
    """One of the node's prefunded accounts: its EIP-55 address and 0x-hex private key."""

    address: str
    private_key: str


@functools.cache
def derive_accounts(
    mnemonic: str = MNEMONIC, count: int = ACCOUNT_COUNT
) -> tuple[FundedAccount, ...]:
    """The accounts hardhat funds from `mnemonic` (BIP-44 m/44'/60'/0'/0/i, i < count)."""
    # Imported here: eth-account's HD wallet costs a second to import, which `--help` and
    # callers that never start a node should not pay.
    from eth_account import Account
    from eth_account.hdaccount import key_from_seed, seed_from_mnemonic

    seed = seed_from_mnemonic(mnemonic, "")
    accounts = []
    for index in range(count):
        key = key_from_seed(seed, ACCOUNT_PATH.format(index=index))
        accounts.append(FundedAccount(Account.from_key(key).address, "0x" + key.hex()))
    return tuple(accounts)


class HardhatNode:
    """A hardhat JSON-RPC node on 127.0.0.1; a context manager, or `start()` and `stop()`.

    `port=None` picks a free port. After `start()`: `url`, `port`, `chain_id`, `accounts`,
    `pid` (also the process group), `log_path` and `start_seconds` (how long it took).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        timeout_seconds: float = start_timeout_seconds,
        project_root: Path = PROJECT_ROOT,
    ) -> None:
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port must be in 1..65535 or None for a free one, got {port}")
        if not timeout_seconds > 0:
            raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds}")
        self.requested_port = port
        self.timeout_seconds = timeout_seconds
        self.project_root = project_root
        self.port: int | None = None
        self.chain_id: int | None = None
        self.accounts: tuple[FundedAccount, ...] = ()
        self.start_seconds: float | None = None
        self._log_dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> HardhatNode:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.port is not None, "the hardhat node has not been started"
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None, "the hardhat node has not been started"
        return self._process.pid

    @property
    def log_path(self) -> Path:
        assert self._log_dir is not None, "the hardhat node has not been started"
        return self._log_dir / "hardhat-node.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the node and wait (at most `timeout_seconds`) until it answers and its
        chain id and accounts are the expected ones; raise HardhatNodeError otherwise,
        having stopped whatever was started."""
        assert self._log_dir is None, "a HardhatNode starts once"
        began = time.monotonic()
        deadline = began + self.timeout_seconds
        command = self._command()
        self._log_dir = Path(tempfile.mkdtemp(prefix="blacktail-hardhat-"))
        atexit.register(self.stop)
        try:
            attempts = 1 if self.requested_port is not None else port_attempts_max
            for attempt in range(1, attempts + 1):
                self._spawn(command, self.requested_port or _free_port())
                # Derived while the node boots, which takes longer.
                expected_accounts = derive_accounts()
                if self._wait_until_answering(deadline):
                    break
                if attempt == attempts:
                    raise HardhatNodeError(
                        f"port {self.port} on {HOST} is in use ({attempt} attempts)",
                        log_tail=self._log_tail(),
                    )
            self.chain_id = int(self._rpc("eth_chainId"), 16)
            if self.chain_id != CHAIN_ID:
                raise HardhatNodeError(
                    f"the node runs chain {self.chain_id}, not {CHAIN_ID}: "
                    f"{CONFIG_PATH} and chain/hardhat_node.py disagree"
                )
            addresses = [address.lower() for address in self._rpc("eth_accounts")]
            if addresses != [account.address.lower() for account in expected_accounts]:
                raise HardhatNodeError(
                    f"the node's accounts {addresses} are not the ones derived from MNEMONIC: "
                    f"{CONFIG_PATH} and chain/hardhat_node.py disagree"
                )
            self.accounts = expected_accounts
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """End the node's process group (SIGTERM, then SIGKILL) and wait until it is gone,
        then delete its log; safe to call more than once and after a failed start."""
        atexit.unregister(self.stop)
        self._end_processes()
        if self._log_dir is not None:
            shutil.rmtree(self._log_dir, ignore_errors=True)

    def _command(self) -> list[str]:
        problem = missing_toolchain(self.project_root)
        if problem is not None:
            raise ToolchainMissing(problem)
        hardhat = self.project_root / HARDHAT_BIN
        return [str(hardhat), "--config", str(CONFIG_PATH), "node", "--hostname", HOST]

    def _spawn(self, command: list[str], port: int) -> None:
        """Start the node on `port` in a new process group, and its watchdog."""
        env = dict(os.environ)
        # CI=true keeps hardhat from prompting for telemetry or fetching its banner; the
        # prompt variable says the same to versions that look only at it.
        env.update(CI="true", HARDHAT_DISABLE_TELEMETRY_PROMPT="true", NO_COLOR="1")
        with self.log_path.open("ab") as log:
            log.write(f"--- {' '.join(command)} --port {port}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                [*command, "--port", str(port)],
                cwd=self.project_root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.port = port
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-c",
                _WATCHDOG_SOURCE,
                str(self._process.pid),
                str(stop_timeout_seconds),
                str(self._log_dir),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session, so a Ctrl-C aimed at the tests does not end it first.
            start_new_session=True,
        )

    def _wait_until_answering(self, deadline: float) -> bool:
        """Wait until the node answers eth_chainId: True once it does, False if it exited
        because the port was taken; HardhatNodeError on any other exit or at the deadline."""
        assert self._process is not None
        while True:
            returncode = self._process.poll()
            if returncode is not None:
                tail = self._log_tail()
                self._end_processes()
                if "EADDRINUSE" in tail:
                    return False
                raise HardhatNodeError(
                    f"the hardhat node exited with status {returncode} before answering",
                    log_tail=tail,
                )
            with contextlib.suppress(OSError, ValueError):
                self._rpc("eth_chainId")
                return True
            if time.monotonic() > deadline:
                raise HardhatNodeError(
                    f"the hardhat node did not answer on {self.url} within "
                    f"{self.timeout_seconds:g} s",
                    log_tail=self._log_tail(),
                )
            time.sleep(poll_interval_seconds)

    def _end_processes(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            _end_group(process)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            assert watchdog.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                watchdog.stdin.write(b"stopped\n")
                watchdog.stdin.close()
            try:
                watchdog.wait(timeout=stop_timeout_seconds)
            except subprocess.TimeoutExpired:
                watchdog.kill()
                watchdog.wait()

    def _rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        request = urllib.request.Request(
            self.url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=rpc_timeout_seconds) as response:
            answer = json.loads(response.read())
        if "error" in answer:
            raise HardhatNodeError(f"{method} failed: {answer['error']}")
        return answer["result"]

    def _log_tail(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(max(0, self.log_path.stat().st_size - log_tail_bytes_max))
                return log.read().decode(errors="replace")
        except OSError:
            return "(no hardhat log)"


def missing_toolchain(project_root: Path = PROJECT_ROOT) -> str | None:
    """Why no node can be started here (node or the npm packages missing), or None."""
    if shutil.which("node") is None:
        return "node is not on PATH: install Node.js 18 or newer and npm"
    hardhat = project_root / HARDHAT_BIN
    if not os.access(hardhat, os.X_OK):
        return (
            f"{hardhat} is missing: run `npm ci` in {project_root} "
            "(`make pytest` does it) to install the pinned hardhat"
        )
    return None


def start_hardhat_node(
    port: int | None = None, timeout_seconds: float = start_timeout_seconds
) -> HardhatNode:
    """Start a hardhat node (on a free port when `port` is None) and return it, running;
    the caller stops it with `stop()`."""
    node = HardhatNode(port, timeout_seconds=timeout_seconds)
    node.start()
    return node


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:`port` (so a stopped node has let it go)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex((HOST, port)) != 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # A process we cannot signal is in it: alive, and not ours.
        return True
    return True


def _end_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's group, SIGKILL it if anything lingers, and reap the leader."""
    pgid = process.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + stop_timeout_seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=poll_interval_seconds)
            if process.poll() is not None and not _group_alive(pgid):
                return
    if process.poll() is None or _group_alive(pgid):
        raise HardhatNodeError(f"the hardhat node's process group {pgid} survived SIGKILL")


def _describe(node: HardhatNode) -> dict[str, Any]:
    return {
        "url": node.url,
        "chain_id": node.chain_id,
        "pid": node.pid,
        "log": str(node.log_path),
        "start_seconds": round(node.start_seconds or 0.0, 3),
        "accounts": [
            {"address": account.address, "private_key": account.private_key}
            for account in node.accounts
        ],
    }


def _print_node(node: HardhatNode) -> None:
    print(f"hardhat node: {node.url}  chain id {node.chain_id}  pid {node.pid}")
    print(f"started in {node.start_seconds:.2f} s; log: {node.log_path}")
    print(f"funded accounts ({ACCOUNT_BALANCE_WEI // 10**18:,} ETH each; public keys):")
    for index, account in enumerate(node.accounts):
        print(f"  #{index}  {account.address}  {account.private_key}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m chain.hardhat_node",
        description="Run the local hardhat JSON-RPC EVM node on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_SHELL_PORT,
        help=f"port to listen on; 0 picks a free one (default {DEFAULT_SHELL_PORT})",
    )
    parser.add_argument(
        "--timeout", type=float, default=start_timeout_seconds, help="start timeout, seconds"
    )
    parser.add_argument("--json", action="store_true", help="print the facts as one JSON line")
    parser.add_argument("--check", action="store_true", help="start, check and stop the node")
    args = parser.parse_args(argv)
    try:
        node = HardhatNode(args.port or None, timeout_seconds=args.timeout)
    except ValueError as error:
        parser.error(str(error))
    # SIGTERM ends the node as Ctrl-C does, rather than orphaning it to the watchdog.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with node:
            if args.json:
                print(json.dumps(_describe(node)), flush=True)
            else:
                _print_node(node)
                print("Ctrl-C stops it." if not args.check else "check passed; stopping.")
                sys.stdout.flush()
            if not args.check:
                signal.pause()
    except HardhatNodeError as error:
        print(f"hardhat node: FAILED: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
