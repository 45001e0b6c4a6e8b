"""`ctripd run` and `ctripd dev` as real processes: readiness, JSON logs, graceful SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

from ctripd.dev.devnet import free_port


def wait_ready(url: str, proc: subprocess.Popen[str], seconds: float = 60) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"exited early with {proc.returncode}: {err[-8000:]}")
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


def test_dev_starts_twice_cleanly_and_refuses_public_chain(embedded_state_dir: Path) -> None:
    state = embedded_state_dir / "dev"
    refused = subprocess.run(
        [sys.executable, "-m", "ctripd", "dev", "--state-dir", str(state), "--chain-id", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert "public network" in refused.stderr
    for run in range(2):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "ctripd", "dev", "--state-dir", str(state), "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "CTRIPD_CONFIG": "/nonexistent"},
        )
        banner = ""
        try:
            body = wait_ready(f"http://127.0.0.1:{port}/readyz", proc, seconds=90)
            assert body["status"] == "ready"
            if run == 0:
                banner = read_banner(proc)
                priced_in_dollars_out_of_the_box(port, banner)
        finally:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        out = banner + out
        assert proc.returncode == 0, err
        assert "ctripd dev" in out and f"http://127.0.0.1:{port}" in out
        # The printed command works as it is: the way this ctripd was started.
        assert f"  {sys.executable} -m ctripd dev --state-dir {state} pay <payment id>" in out
    assert (state / "mnemonic").stat().st_mode & 0o077 == 0


def read_banner(proc: subprocess.Popen[str]) -> str:
    """What `ctripd dev` printed up to its last banner line (it flushes it before serving)."""
    assert proc.stdout is not None
    lines: list[str] = []
    while not lines or "in a browser for the checkout page" not in lines[-1]:
        line = proc.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
    return "".join(lines)


def priced_in_dollars_out_of_the_box(port: int, banner: str) -> None:
    """The banner's priced create works as printed: the pegged test dollars and ETH, quoted by
    the devnet's price feed, are all offered."""
    key = re.search(r"API key:\s+(\S+)", banner)
    body = re.search(r"-d '(\{\"price\".*\})'", banner)
    assert key is not None and body is not None, banner
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/payments",
        data=body.group(1).encode(),
        headers={"Authorization": f"Bearer {key.group(1)}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 201
        payment = json.loads(resp.read())
    assert payment["price"]["amount"] == "25.00"
    options = {o["asset"]: o for o in payment["options"]}
    assert [o["available"] for o in payment["options"]] == [True, True, True]
    assert (options["USDTL"]["amount"], options["TD6"]["rate"]) == ("25", "1")
    assert Decimal(options["ETH"]["rate"]) == 2000 and options["ETH"]["amount"] == "0.0125"
    (source,) = options["ETH"]["quote"]["sources"]
    assert source["source"].startswith("feed:devnet:0x")


def test_embedded_postgres_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "ctripd.toml"
    mnemonic = tmp_path / "mnemonic"
    mnemonic.write_text("test test test test test test test test test test test junk\n")
    mnemonic.chmod(0o600)
    config.write_text(
        f'[daemon]\nstate_dir = "{tmp_path / "state"}"\n[wallet]\nmnemonic_file = "{mnemonic}"\n'
    )
    (tmp_path / "chains.yaml").write_text(
        "chains:\n- {name: anvil, chain_id: 31337, rpc: ['http://127.0.0.1:1'],"
        " native: {symbol: ETH, decimals: 18},"
        " treasury: '0x70997970C51812dc3A010C7d01b50e0d17dc79C8'}\n"
    )
    command = [sys.executable, "-m", "ctripd", "--config", str(config), "migrate"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    with (tmp_path / "state" / "postgres" / "postgresql.conf").open("a") as conf:
        conf.write("no_such_setting = 1\n")

    broken = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert broken.returncode == 1
    assert "Traceback" not in broken.stderr
    (line,) = [x for x in broken.stderr.splitlines() if x.startswith("ctripd:")]
    assert "embedded PostgreSQL" in line and "no_such_setting" in line, broken.stderr


class StallingRpcProxy:
    """JSON-RPC pass-through to Anvil that, once stalled, holds every request until released: a
    scheduler job caught waiting on its RPC is work in flight at the moment the test chooses."""

    def __init__(self, target: str) -> None:
        self.open = threading.Event()
        self.open.set()
        self.held = 0
        self.changed = threading.Condition()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if not proxy.open.is_set():
                    with proxy.changed:
                        proxy.held += 1
                        proxy.changed.notify_all()
                    proxy.open.wait(60)
                request = urllib.request.Request(target, body, {"content-type": "application/json"})
                with urllib.request.urlopen(request, timeout=10) as resp:
                    answer = resp.read()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass  # ctripd hung up on a held request: that is the point of the cut-short test

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stall(self) -> None:
        self.held = 0
        self.open.clear()

    def wait_held(self, count: int, seconds: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.held >= count, seconds)

    def release(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


class Daemon:
    """A `ctripd run` process; its JSON log lines (stdout and stderr) are collected as they come.
    `env` adds to the test's environment."""

    def __init__(self, config_path: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ctripd", "--config", config_path, "run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.raw: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (self.proc.stdout, self.proc.stderr)
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.raw.append(line)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in list(self.raw) if line.startswith("{")]

    def wait_event(self, event: str, seconds: float = 60) -> dict[str, Any]:
        """The first log line of `event`, once there is one."""
        deadline = time.monotonic() + seconds
        while not (found := [line for line in self.lines() if line["event"] == event]):
            assert self.proc.poll() is None, "".join(self.raw)[-3000:]
            assert time.monotonic() < deadline, f"no {event} in {seconds} s"
            time.sleep(0.1)
        return found[0]

    def stop(self, timeout: float) -> int:
        """SIGTERM, then the exit code; the process must be gone within `timeout` s."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for reader in self.readers:
                reader.join(timeout=10)
        return code


def _start_with_work_in_flight(
    write_config: Any, anvil: Any, proxy: StallingRpcProxy, grace: int, port: int | None = None
) -> tuple[Daemon, int]:
    """A daemon whose chain watcher (and sweeper) are stuck mid-RPC, with fresh blocks to scan
    once their answers come; returns it and the head those blocks reach."""
    port = port or free_port()
    chain = {
        "name": "anvil",
        "chain_id": 31337,
        "rpc": [proxy.url],
        "confirmations": 2,
        "poll_interval": 0.5,
        "native": {"symbol": "ETH", "decimals": 18},
        "treasury": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    }
    config = write_config(
        toml={"server": {"port": port}, "daemon": {"shutdown_timeout": grace}}, chains=[chain]
    )
    daemon = Daemon(str(config.path))
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", daemon.proc)
        daemon.wait_event("chain.scanned")  # the watcher ran once: its next run is the held one
        proxy.stall()
        anvil.rpc("evm_mine", [])
        anvil.rpc("evm_mine", [])
        head = int(anvil.rpc("eth_blockNumber", []), 16)
        # The watcher's and the sweeper's runs each wait on their eth_blockNumber.
        assert proxy.wait_held(2, 30), f"{proxy.held} request(s) held"
    except BaseException:
        daemon.proc.kill()
        daemon.proc.wait()
        raise
    return daemon, head


def _errors(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["level"] in ("error", "critical")]


def test_sigterm_finishes_in_flight_jobs_and_logs_no_error(  # type: ignore[no-untyped-def]
    write_config, anvil
) -> None:
    proxy = StallingRpcProxy(anvil.url)
    try:
        daemon, head = _start_with_work_in_flight(write_config, anvil, proxy, grace=30)
        time.sleep(1.5)  # ticks (every 0.5 s) come while the runs are held
        threading.Timer(2.0, proxy.release).start()  # the in-flight RPCs answer after SIGTERM
        assert daemon.stop(timeout=60) == 0, "".join(daemon.raw)[-3000:]
    finally:
        proxy.close()
    lines = daemon.lines()
    assert not _errors(lines), _errors(lines)
    # Runs held for several poll intervals are no scheduler warning ("maximum number of
    # running instances reached") either: ticks during a run skip quietly.
    scheduler = [x for x in lines if x.get("logger", "").startswith("apscheduler")]
    assert not [x for x in scheduler if x["level"] != "info"], scheduler
    events = [line["event"] for line in lines]
    assert events[-1] == "ctripd.stopped", events
    # The watcher's run was let finish: it scanned the blocks its held request reported.
    assert any(line["event"] == "chain.scanned" and line["scanned"] == head for line in lines), (
        events
    )
    assert "tasks.cancelled" not in events


def test_sigterm_cuts_jobs_short_after_the_grace_with_one_warning(  # type: ignore[no-untyped-def]
    write_config, anvil
) -> None:
    proxy = StallingRpcProxy(anvil.url)
    try:
        daemon, _ = _start_with_work_in_flight(write_config, anvil, proxy, grace=1)
        assert daemon.stop(timeout=30) == 0, "".join(daemon.raw)[-3000:]
    finally:
        proxy.close()
    lines = daemon.lines()
    assert not _errors(lines), _errors(lines)
    cancelled = [line for line in lines if line["event"] == "tasks.cancelled"]
    assert len(cancelled) == 1, cancelled
    assert cancelled[0]["level"] == "warning"
    assert "watch:anvil" in cancelled[0]["tasks"]
    assert [line["event"] for line in lines][-1] == "ctripd.stopped"


def test_http_jobs_and_webhooks_share_one_grace_period(  # type: ignore[no-untyped-def]
    write_config, anvil
) -> None:
    """A request whose body never comes holds aiohttp's drain for the whole grace; the jobs
    drain in the same period instead of getting a second one after it."""
    grace, port = 5, free_port()
    proxy = StallingRpcProxy(anvil.url)
    try:
        daemon, _ = _start_with_work_in_flight(write_config, anvil, proxy, grace, port)
        with socket.create_connection(("127.0.0.1", port)) as stuck:
            stuck.sendall(
                b"POST /v1/payments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            time.sleep(0.5)  # the request reached its handler
            started = time.monotonic()
            assert daemon.stop(timeout=60) == 0, "".join(daemon.raw)[-3000:]
            took = time.monotonic() - started
    finally:
        proxy.close()
    lines = daemon.lines()
    assert not _errors(lines), _errors(lines)
    (cancelled,) = [line for line in lines if line["event"] == "tasks.cancelled"]
    assert cancelled["grace_seconds"] < 1, cancelled  # what the request's drain left of it
    # One grace period, not one per drain (which took at least 2 x grace).
    assert took < 2 * grace - 1, took
