"""The embedded Postgres of a real `ctripd run` dies (its postmaster SIGKILLed, as the OOM killer
would): the daemon restarts it, logs the server's log tail, and creates payments again within
seconds; processes sharing the data directory start it once between them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from test_process import Daemon, wait_ready

from ctripd.dev.devnet import free_port
from ctripd.http.auth import create_key

# Generous for a loaded 2-core machine; a restart takes about two seconds here.
RECOVERY_LIMIT = 20.0


def embedded_config(write_config: Any, port: int, state_dir: Path) -> Any:
    return write_config(
        toml={
            "server": {"port": port},
            "database": {"dsn": ""},
            "daemon": {"migrate_on_start": True, "state_dir": str(state_dir)},
        }
    )


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def api_key(data_dir: Path) -> str:
    """A key made in the embedded database, through its socket in the data directory."""

    async def make() -> str:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        conn = await asyncpg.connect(host=lines[4], user="postgres", database="postgres")
        try:
            key, _ = await create_key(conn, "test", "default")
        finally:
            await conn.close()
        return key

    return asyncio.run(make())


def create_payment(port: int, key: str) -> tuple[int, dict[str, Any]]:
    body = {"chain": "anvil", "asset": "ETH", "amount": "0.01", "expires_in": 3600}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/payments",
        json.dumps(body).encode(),
        {
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Idempotency-Key": uuid.uuid4().hex,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def seconds_until_created(port: int, key: str, since: float) -> float:
    """Create payments until one is created; returns the seconds from `since` to that moment.
    Meanwhile the answers are 503 problems, never a 500."""
    while time.monotonic() - since < RECOVERY_LIMIT:
        try:
            status, body = create_payment(port, key)
        except OSError:
            status, body = 0, {}
        if status == 201:
            return time.monotonic() - since
        assert status in (0, 503), (status, body)
        time.sleep(0.1)
    raise AssertionError(f"no payment created within {RECOVERY_LIMIT} s of the kill")


def recoveries(daemons: list[Daemon]) -> list[str]:
    back = ("embedded_postgres.restarted", "embedded_postgres.rejoined")
    return [line["event"] for d in daemons for line in d.lines() if line["event"] in back]


def stop(daemon: Daemon) -> None:
    assert daemon.stop(timeout=60) == 0, "".join(daemon.raw)[-3000:]
    # asyncpg's warnings while the server is away carry their traceback inside a JSON line.
    assert not [line for line in daemon.raw if not line.startswith("{") and "Traceback" in line]


def test_killed_postmaster_is_restarted_and_payments_are_created_again(  # type: ignore[no-untyped-def]
    write_config, anvil, embedded_state_dir: Path
) -> None:
    port = free_port()
    config = embedded_config(write_config, port, embedded_state_dir)
    data_dir = embedded_state_dir / "postgres"
    daemon = Daemon(str(config.path))
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", daemon.proc)
        key = api_key(data_dir)
        status, before = create_payment(port, key)
        assert status == 201, before
        pid = postmaster_pid(data_dir)

        os.kill(pid, signal.SIGKILL)
        took = seconds_until_created(port, key, time.monotonic())

        died = daemon.wait_event("embedded_postgres.died")
        assert died["level"] == "error"
        assert died["pid"] == pid and died["how"] == "killed by SIGKILL", died
        restarted = daemon.wait_event("embedded_postgres.restarted")
        assert restarted["pid"] == postmaster_pid(data_dir) != pid
        # The server's own account of the restart: crash recovery, then ready again.
        tail = "\n".join(restarted["log_tail"])
        assert "not properly shut down" in tail, tail
        assert "ready to accept connections" in tail, tail
        # Nothing created before the kill is lost.
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/payments/{before['id']}",
            headers={"Authorization": f"Bearer {key}"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert json.loads(resp.read())["id"] == before["id"]
    except BaseException:
        daemon.proc.kill()
        print("".join(daemon.raw)[-8000:])
        raise
    stop(daemon)
    print(f"payments created again {took:.2f} s after the kill")
    assert took < RECOVERY_LIMIT
    # The last process out stops the server it restarted.
    assert not (data_dir / "postmaster.pid").exists()


def test_processes_sharing_the_data_dir_restart_it_once(  # type: ignore[no-untyped-def]
    write_config, anvil, embedded_state_dir: Path
) -> None:
    ports = [free_port(), free_port()]
    config = embedded_config(write_config, ports[0], embedded_state_dir)
    data_dir = embedded_state_dir / "postgres"
    daemons: list[Daemon] = []
    try:
        for port in ports:
            daemons.append(Daemon(str(config.path), env={"CTRIPD_SERVER__PORT": str(port)}))
            wait_ready(f"http://127.0.0.1:{port}/healthz", daemons[-1].proc)
        key = api_key(data_dir)

        os.kill(postmaster_pid(data_dir), signal.SIGKILL)
        killed = time.monotonic()
        for port in ports:
            seconds_until_created(port, key, killed)

        for daemon in daemons:
            daemon.wait_event("embedded_postgres.died")
        # One of them started the server again, the other joined it.
        deadline = time.monotonic() + 30
        while len(back := recoveries(daemons)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sorted(back) == ["embedded_postgres.rejoined", "embedded_postgres.restarted"]
    except BaseException:
        for daemon in daemons:
            daemon.proc.kill()
        raise
    for daemon in reversed(daemons):
        stop(daemon)
    assert not (data_dir / "postmaster.pid").exists()
