"""Helpers for integration tests: configuration files and real component processes."""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TEST_INSTRUMENTS = """
[[instruments]]
symbol = "SBER"
name = "Sberbank"
isin = "RU0009029540"
tick_size = "0.01"
lot_size = 10
reference_price = "280.00"
price_band_pct = "20"

[[instruments]]
symbol = "GAZP"
name = "Gazprom"
isin = "RU0007661625"
tick_size = "0.01"
lot_size = 10
reference_price = "130.00"
price_band_pct = "20"

[[firms]]
id = "FIRM1"
name = "First Broker"
credit_limit = "100000000000"
self_trade_prevention = "none"
accounts = ["A1", "A2"]

[[firms]]
id = "FIRM2"
name = "Second Broker"
credit_limit = "100000000000"
self_trade_prevention = "cancel_resting"
accounts = ["B1"]
"""


def write_config(tmp_path: Path, *, fsync: str = "batch", consumer_buffer_bytes: int = 8 << 20,
                 extra_engine: str = "", instruments: str = TEST_INSTRUMENTS,
                 journal_dir: Path | None = None, name: str = "bourse.toml") -> Path:
    journal = journal_dir or (tmp_path / "journal")
    # tests run side by side: never a fixed replay port unless the test sets [marketdata]
    marketdata = "" if "[marketdata]" in instruments else "[marketdata]\nreplay_port = 0\n"
    text = f"""
[market]
price_decimals = 4

[engine]
host = "127.0.0.1"
order_entry_port = 0
replication_port = 0
journal_dir = "{journal}"
fsync = "{fsync}"
consumer_buffer_bytes = {consumer_buffer_bytes}
heartbeat_ms = 200
{extra_engine}
{marketdata}
{instruments}
"""
    path = tmp_path / name
    path.write_text(text)
    return path


class Proc:
    """A component process started with ``python -m bourse ...``; always stopped by the test."""

    def __init__(self, args: list[str], *, env: dict | None = None, cwd: Path | None = None):
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
        if env:
            full_env.update(env)
        self.args = args
        self.proc = subprocess.Popen([sys.executable, "-m", "bourse", *args], cwd=cwd or ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=full_env)
        self.ready: dict | None = None
        self.stdout_lines: list[str] = []

    def wait_ready(self, timeout: float = 30.0) -> dict:
        """Read stdout (raw, so no line hides in a buffer) until the READY line."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        pending = b""
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        try:
            while time.monotonic() < deadline:
                if not sel.select(timeout=0.1):
                    if self.proc.poll() is not None:
                        break
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode() + "\n"
                    self.stdout_lines.append(line)
                    if line.startswith("READY "):
                        self.ready = json.loads(line[6:])
                        return self.ready
        finally:
            sel.close()
        self.kill()
        raise AssertionError(f"{self.args} did not become ready: {self.stderr()}")

    def endpoint(self, name: str) -> tuple[str, int]:
        host, port = self.ready[name].rsplit(":", 1)
        return host, int(port)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stderr(self) -> str:
        if self.proc.poll() is None or not self.proc.stderr:
            return ""
        return self.proc.stderr.read().decode(errors="replace")


def run_bourse(args: list[str], timeout: float = 60.0, env: dict | None = None):
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "bourse", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=ROOT)
