"""Config loading: each kind of mistake gives one line naming file, key and problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctripd.config import ConfigError, load_config, read_secret

TREASURY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def chain(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "anvil",
        "chain_id": 31337,
        "rpc": ["http://127.0.0.1:8545"],
        "native": {"symbol": "ETH", "decimals": 18},
        "treasury": TREASURY,
        "tokens": {
            "USDC": {"address": "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", "decimals": 6}
        },
    }
    entry.update(overrides)
    return entry


@pytest.fixture
def files(tmp_path: Path):  # type: ignore[no-untyped-def]
    mnemonic = tmp_path / "mnemonic"
    mnemonic.write_text("test test test test test test test test test test test junk\n")
    mnemonic.chmod(0o600)

    def write(toml: str = "", chains: list[dict[str, Any]] | None = None) -> Path:
        path = tmp_path / "ctripd.toml"
        path.write_text(f'[wallet]\nmnemonic_file = "{mnemonic}"\n' + toml)
        (tmp_path / "chains.yaml").write_text(yaml.safe_dump({"chains": chains or [chain()]}))
        return path

    return write


def error_of(path: Path, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return info.value


def test_valid_config_loads(files) -> None:  # type: ignore[no-untyped-def]
    config = load_config(files(), env={})
    assert config.server.port == 8080
    (anvil,) = config.chains
    assert anvil.tokens["USDC"].decimals == 6
    assert anvil.asset("USDC") == ("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", 6)
    assert anvil.asset("ETH") == (None, 18)
    assert anvil.asset("DOGE") is None


def test_env_override(files) -> None:  # type: ignore[no-untyped-def]
    env = {"CTRIPD_SERVER__PORT": "9100", "CTRIPD_LOG__LEVEL": "debug"}
    config = load_config(files(), env=env)
    assert config.server.port == 9100
    assert config.log.level == "debug"


def test_env_override_wrong_type(files) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files(), {"CTRIPD_SERVER__PORT": "ninety"})
    assert err.key == "server.port"
    assert "expected integer" in err.problem
    assert "CTRIPD_SERVER__PORT" in str(err)


def test_env_override_unknown_key(files) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files(), {"CTRIPD_SERVER__PROT": "1"})
    assert err.key == "server.prot"
    assert "did you mean 'port'" in err.problem


def test_missing_key(files) -> None:  # type: ignore[no-untyped-def]
    entry = chain()
    del entry["treasury"]
    err = error_of(files(chains=[entry]))
    assert err.file.endswith("chains.yaml")
    assert err.key == "chains.anvil.treasury"
    assert err.problem == "missing required key"


def test_wrong_type(files) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files('[server]\nport = "8080"\n'))
    assert err.file.endswith("ctripd.toml")
    assert err.key == "server.port"
    assert "expected integer, got string" in err.problem


def test_unknown_key_typo(files) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files(chains=[chain(confirmatoins=3)]))
    assert err.key == "chains.anvil.confirmatoins"
    assert "did you mean 'confirmations'" in err.problem


def test_unknown_section(files) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files("[servre]\nport = 1\n"))
    assert err.key == "servre"
    assert "unknown section" in err.problem


def test_bad_address(files) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files(chains=[chain(treasury="0x1234")]))
    assert err.key == "chains.anvil.treasury"
    assert "not an address" in err.problem


def test_non_checksummed_address(files) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files(chains=[chain(treasury=TREASURY.lower())]))
    assert err.key == "chains.anvil.treasury"
    assert "not checksummed" in err.problem
    assert TREASURY in err.problem


def test_duplicate_chain_name(files) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files(chains=[chain(), chain(chain_id=1)]))
    assert err.key == "chains.anvil.name"
    assert "duplicate chain name" in err.problem


def test_duplicate_chain_id(files) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files(chains=[chain(), chain(name="other")]))
    assert err.key == "chains.other.chain_id"
    assert "duplicate chain id 31337" in err.problem


def test_token_without_decimals(files) -> None:  # type: ignore[no-untyped-def]
    entry = chain(tokens={"USDC": {"address": "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"}})
    err = error_of(files(chains=[entry]))
    assert err.key == "chains.anvil.tokens.USDC.decimals"
    assert err.problem == "missing required key"


def test_dust_thresholds_are_per_asset(files) -> None:  # type: ignore[no-untyped-def]
    usdc = {"address": "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", "decimals": 6}
    entry = chain(dust_threshold=10**15, tokens={"USDC": {**usdc, "dust_threshold": 10**4}})
    (loaded,) = load_config(files(chains=[entry]), env={}).chains
    assert loaded.dust_threshold_of(None) == 10**15
    assert loaded.dust_threshold_of(usdc["address"].lower()) == 10**4


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        (chain(dust_threshold=-1), "chains.anvil.dust_threshold"),
        (
            chain(
                tokens={
                    "USDC": {
                        "address": "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
                        "decimals": 6,
                        "dust_threshold": -5,
                    }
                }
            ),
            "chains.anvil.tokens.USDC.dust_threshold",
        ),
    ],
)
def test_negative_dust_threshold(files, entry: dict[str, Any], key: str) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files(chains=[entry]))
    assert (err.key, err.problem) == (key, "must not be negative")


def test_empty_rpc_list(files) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files(chains=[chain(rpc=[])]))
    assert err.key == "chains.anvil.rpc"
    assert "at least one RPC URL" in err.problem


def test_world_readable_mnemonic_refused(tmp_path: Path) -> None:
    secret = tmp_path / "mnemonic"
    secret.write_text("words\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError) as info:
        read_secret("ctripd.toml", "wallet.mnemonic_file", str(secret))
    assert info.value.key == "wallet.mnemonic_file"
    assert "accessible by group/other (mode 0644)" in info.value.problem
    assert "words" not in str(info.value)
    secret.chmod(0o600)
    assert read_secret("ctripd.toml", "wallet.mnemonic_file", str(secret)) == "words"


def test_secret_from_systemd_credentials(tmp_path: Path) -> None:
    (tmp_path / "mnemonic").write_text("from-credentials")
    (tmp_path / "mnemonic").chmod(0o400)
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    assert read_secret("ctripd.toml", "wallet.mnemonic_file", "mnemonic", env) == (
        "from-credentials"
    )


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctripd", *args], capture_output=True, text=True, timeout=60
    )


def test_cli_prints_one_line_and_exits_2(files) -> None:  # type: ignore[no-untyped-def]
    path = files(chains=[chain(treasury=TREASURY.lower())])
    result = run_cli("--config", str(path), "migrate")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "chains.yaml: chains.anvil.treasury: address is not checksummed" in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_refuses_world_readable_mnemonic(files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = files()
    (tmp_path / "mnemonic").chmod(0o644)
    result = run_cli("--config", str(path), "run")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "wallet.mnemonic_file" in result.stderr and "chmod 600" in result.stderr


def test_check_names_chain_with_wrong_id(files, anvil, db_dsn) -> None:  # type: ignore[no-untyped-def]
    good = chain(rpc=[anvil.url], tokens={})
    wrong = chain(name="mainnet", chain_id=1, rpc=[anvil.url], tokens={})
    path = files(f'[database]\ndsn = "{db_dsn}"\n', chains=[good, wrong])
    result = run_cli("--config", str(path), "check")
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    assert any(
        line.startswith("FAIL chain mainnet") and "chain id 31337, configured 1" in line
        for line in lines
    ), result.stdout
    assert any(line.startswith("ok   chain anvil") for line in lines), result.stdout
    assert any(line.startswith("ok   database") for line in lines), result.stdout
