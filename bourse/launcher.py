"""``bourse up``: the whole local exchange as a set of supervised processes.

Contract:
- Components start in dependency order (the engine first: every other component connects to it),
  each as its own process running ``python -m bourse <component>`` with the same configuration,
  exactly as they would run on separate hosts. Each is awaited until it prints its READY line.
- The endpoints of every component are printed once all are up.
- Ctrl-C or SIGTERM stops the components in reverse order (SIGTERM, then SIGKILL after a grace
  period) and exits 0. Components run in their own sessions, so a Ctrl-C on the terminal
  reaches only the launcher, which stops them in that order (consumers before the engine). If any component exits on its own, the others are stopped and the exit
  status is 1, with the component and its status named.
- Component logs (stderr) pass through, so alerts are visible on the operator's terminal.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time

def components(cfg) -> list[tuple[str, list[str]]]:
    """(display name, ``bourse`` arguments) of every component, in start order."""
    out = [("engine", ["engine"])]
    for g in cfg.gateways:
        out.append((f"gateway {g.node_id}", ["gateway", "--node", g.node_id,
                                              "--engine", "{engine.order_entry}"]))
    out.append(("marketdata", ["marketdata", "--engine-replication", "{engine.replication}"]))
    if cfg.indices:
        out.append(("index", ["index", "--engine-replication", "{engine.replication}"]))
    return out
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the launcher dies, so no component is left orphaned."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class _Child:
    def __init__(self, name: str, args: list[str], config: str | None) -> None:
        cmd = [sys.executable, "-m", "bourse", *args]
        if config:
            cmd += ["--config", config]
        self.name = name
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, preexec_fn=_die_with_parent,
                                     start_new_session=True)
        self.ready: dict | None = None

    def wait_ready(self, timeout: float) -> dict | None:
        """Pass the child's stdout through until its READY line (read raw: nothing buffered)."""
        fd = self.proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        pending = b""
        try:
            while time.monotonic() < deadline:
                if not sel.select(timeout=0.2):
                    if self.proc.poll() is not None:
                        return None
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    return None
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace")
                    if line.startswith("READY "):
                        self.ready = json.loads(line[6:])
                        return self.ready
                    print(line)
        finally:
            sel.close()
        return None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def run_up(config: str | None) -> int:
    from bourse.config import load_config

    cfg = load_config(config)
    stop_requested = False

    def on_signal(signum, frame):
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    children: list[_Child] = []
    status = 0
    try:
        endpoints: dict[str, str] = {}
        for name, args in components(cfg):
            args = [endpoints.get(a[1:-1], "") if a.startswith("{") else a for a in args]
            child = _Child(name, args, config)
            children.append(child)
            info = child.wait_ready(READY_TIMEOUT_S)
            if info is None:
                code = child.proc.poll()
                print(f"bourse up: {name} did not start"
                      + (f" (exit status {code})" if code is not None else " in time"),
                      file=sys.stderr)
                return 1
            for k, v in info.items():
                endpoints[f"{name}.{k}"] = str(v)
        print("Bourse is up:")
        for child in children:
            eps = {k: v for k, v in child.ready.items() if k != "component"}
            print(f"  {child.name:<12} " + "  ".join(f"{k}={v}" for k, v in eps.items()
                                                     if k not in ("next_cmd_seq", "next_event_seq")))
        print("Press Ctrl-C to stop.")
        print("READY " + json.dumps({c.name: {k: v for k, v in c.ready.items() if k != "component"}
                                     for c in children}, sort_keys=True), flush=True)
        while not stop_requested:
            for child in children:
                code = child.proc.poll()
                if code is not None:
                    print(f"bourse up: {child.name} exited with status {code}; stopping",
                          file=sys.stderr)
                    status = 1
                    stop_requested = True
                    break
            time.sleep(0.2)
    finally:
        for child in reversed(children):
            child.stop()
        if status == 0 and stop_requested:
            print("Bourse stopped.", flush=True)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_up(os.environ.get("BOURSE_CONFIG")))
