"""`ctripd run` and `ctripd dev` as real processes: readiness, JSON logs, graceful SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ctripd.devnet import free_port


def wait_ready(url: str, proc: subprocess.Popen[str], seconds: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"exited early with {proc.returncode}: {err[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                body: dict[str, object] = json.loads(resp.read())
                return body
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} not ready in {seconds} s")


def test_run_serves_logs_json_and_stops_on_sigterm(write_config, anvil, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    config = write_config(toml={"server": {"port": port}})
    proc = subprocess.Popen(
        [sys.executable, "-m", "ctripd", "--config", config.path, "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
        assert body["status"] == "ready"
        anvil.rpc("evm_mine")
        time.sleep(1.5)  # let the per-chain job tick at least once on its own schedule
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines, out
    for line in lines:
        assert {"event", "level", "timestamp"} <= line.keys(), line
    events = [line["event"] for line in lines]
    assert "scheduler.started" in events
    assert any(line.get("chain") == "anvil" for line in lines)
    assert events[-1] == "ctripd.stopped"
    assert "scheduler.stopped" in events
    assert "Traceback" not in err


def test_dev_starts_twice_cleanly_and_refuses_public_chain(tmp_path: Path) -> None:
    state = tmp_path / "dev"
    refused = subprocess.run(
        [sys.executable, "-m", "ctripd", "dev", "--state-dir", str(state), "--chain-id", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "public network" in refused.stderr
    for _ in range(2):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "ctripd", "dev", "--state-dir", str(state), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "CTRIPD_CONFIG": "/nonexistent"},
        )
        try:
            body = wait_ready(f"http://127.0.0.1:{port}/readyz", proc, seconds=90)
            assert body["status"] == "ready"
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "ctripd dev" in out and f"http://127.0.0.1:{port}" in out
    assert (state / "mnemonic").stat().st_mode & 0o077 == 0
