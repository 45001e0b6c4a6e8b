"""`ctripd check`: one line per check, the exit code says whether ctripd can start."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from yoyo import get_backend, read_migrations

from ctripd import db
from ctripd.dev.devnet import AnvilProcess

TREASURY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def write(tmp_path: Path, anvil: AnvilProcess, toml: str) -> Path:
    mnemonic = tmp_path / "mnemonic"
    mnemonic.write_text("test test test test test test test test test test test junk\n")
    mnemonic.chmod(0o600)
    (tmp_path / "chains.yaml").write_text(
        f"chains:\n- {{name: anvil, chain_id: 31337, rpc: ['{anvil.url}'],"
        f" native: {{symbol: ETH, decimals: 18}}, treasury: '{TREASURY}'}}\n"
    )
    path = tmp_path / "ctripd.toml"
    path.write_text(f'[wallet]\nmnemonic_file = "{mnemonic}"\n' + toml)
    return path


def check(path: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "ctripd", "--config", str(path), "check"]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def roll_back_last(dsn: str) -> str:
    backend = get_backend(db.yoyo_url(dsn))
    with db.migrations_dir() as path, backend.lock():
        migrations = read_migrations(str(path))
        last = migrations[-1]
        backend.rollback_migrations(migrations.filter(lambda m: m.id == last.id))
    backend.connection.close()
    return str(last.id)


async def test_check_reports_pending_migrations(tmp_path: Path, anvil, db_dsn: str) -> None:  # type: ignore[no-untyped-def]
    database = f'[database]\ndsn = "{db_dsn}"\n'
    path = write(tmp_path, anvil, database)
    result = await asyncio.to_thread(check, path)
    assert result.returncode == 0, result.stdout
    assert "ok   migrations: all applied" in result.stdout.splitlines()

    last = await asyncio.to_thread(roll_back_last, db_dsn)
    result = await asyncio.to_thread(check, path)
    assert result.returncode == 0, result.stdout  # `ctripd run` applies it (migrate_on_start)
    assert f"ok   migrations: 1 ({last}) pending, applied when ctripd starts" in result.stdout

    path = write(tmp_path, anvil, "[daemon]\nmigrate_on_start = false\n" + database)
    result = await asyncio.to_thread(check, path)
    assert result.returncode == 1, result.stdout
    assert f"FAIL migrations: 1 ({last}) pending: run `ctripd migrate`" in result.stdout


def test_config_error_exits_2_like_run(tmp_path: Path, anvil) -> None:  # type: ignore[no-untyped-def]
    result = check(write(tmp_path, anvil, "[server]\nprot = 1\n"))
    assert result.returncode == 2
    (line,) = result.stdout.splitlines()[:1]
    assert line.startswith("FAIL config:") and "server.prot" in line


def test_check_names_chain_with_wrong_id(tmp_path: Path, anvil: AnvilProcess, db_dsn: str) -> None:
    path = write(tmp_path, anvil, f'[database]\ndsn = "{db_dsn}"\n')
    (tmp_path / "chains.yaml").write_text(
        f"chains:\n- {{name: anvil, chain_id: 31337, rpc: ['{anvil.url}'],"
        f" native: {{symbol: ETH, decimals: 18}}, treasury: '{TREASURY}'}}\n"
        f"- {{name: mainnet, chain_id: 1, rpc: ['{anvil.url}'],"
        f" native: {{symbol: ETH, decimals: 18}}, treasury: '{TREASURY}'}}\n"
    )
    result = check(path)
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("FAIL chain mainnet") and "chain id 31337, configured 1" in line
        for line in lines
    ), result.stdout
    assert any(line.startswith("ok   chain anvil") for line in lines), result.stdout
    assert any(line.startswith("ok   database") for line in lines), result.stdout


async def test_check_never_prints_an_rpc_urls_key(
    tmp_path: Path, anvil: AnvilProcess, db_dsn: str
) -> None:
    """Provider URLs carry API keys in their paths: `ctripd check` used to print them whole."""
    path = write(tmp_path, anvil, f'[database]\ndsn = "{db_dsn}"\n')
    keyed = f"{anvil.url}/v3/SECRETKEY0123456789?apikey=SECRETQUERY"
    (tmp_path / "chains.yaml").write_text(
        f"chains:\n- {{name: anvil, chain_id: 31337, rpc: ['{keyed}'],"
        f" native: {{symbol: ETH, decimals: 18}}, treasury: '{TREASURY}'}}\n"
    )
    result = check(path)
    assert "SECRET" not in result.stdout + result.stderr
    assert f"chain anvil rpc {anvil.url}/…" in result.stdout
