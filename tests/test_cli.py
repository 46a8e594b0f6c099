"""The command line as a user meets it: bourse up, check-config, bad input."""
from __future__ import annotations

import pytest

from tests.procs import run_bourse, write_config

pytestmark = pytest.mark.integration


def test_up_starts_the_exchange_and_stops_cleanly(tmp_path, procs):
    cfg = write_config(tmp_path)
    p = procs(["up", "--config", str(cfg)])
    ready = p.wait_ready()
    assert set(ready) >= {"engine"}
    assert ready["engine"]["order_entry"].startswith("127.0.0.1:")
    assert "Bourse is up" in "".join(p.stdout_lines)
    assert p.stop() == 0
    assert (tmp_path / "journal" / "engine.journal").exists()


def test_up_reports_a_component_that_cannot_start(tmp_path, procs):
    cfg = write_config(tmp_path)
    # Two exchanges on one journal: the second engine cannot lock it and must say so.
    first = procs(["engine", "--config", str(cfg)])
    first.wait_ready()
    res = run_bourse(["up", "--config", str(cfg)])
    assert res.returncode == 1
    assert "engine did not start" in res.stderr
    assert "Traceback" not in res.stderr


def test_check_config_prints_digest():
    res = run_bourse(["check-config"])
    assert res.returncode == 0
    assert "embedded default" in res.stdout and "digest" in res.stdout


def test_unknown_key_is_named(tmp_path):
    cfg = write_config(tmp_path, extra_engine="fsync_intervall_ms = 3")
    res = run_bourse(["check-config", str(cfg)])
    assert res.returncode == 2
    assert "engine.fsync_intervall_ms" in res.stderr and str(cfg) in res.stderr


def test_missing_config_file(tmp_path):
    res = run_bourse(["engine", "--config", str(tmp_path / "nope.toml")])
    assert res.returncode == 2 and "nope.toml" in res.stderr
    assert "Traceback" not in res.stderr
