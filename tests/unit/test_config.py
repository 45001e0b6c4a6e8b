"""Config loading: each kind of mistake gives one line naming file, key and problem."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from ctripd.config import (
    _SECTIONS,
    FIRST_DEPOSIT_INDEX,
    ChainConfig,
    ConfigError,
    NativeAsset,
    Token,
    load_config,
    range_of,
    read_secret,
)

ROOT = Path(__file__).resolve().parents[2]
TREASURY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
USDC = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"


def chain(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "anvil",
        "chain_id": 31337,
        "rpc": ["http://127.0.0.1:8545"],
        "native": {"symbol": "ETH", "decimals": 18},
        "treasury": TREASURY,
        "tokens": {"USDC": {"address": USDC, "decimals": 6}},
    }
    entry.update(overrides)
    return entry


def toml_key(key: str, value: Any) -> str:
    """TOML text setting `section.name`; `files` already opened the [wallet] table."""
    section, name = key.split(".")
    return ("" if section == "wallet" else f"[{section}]\n") + f"{name} = {json.dumps(value)}\n"


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


def test_sweep_mode_is_one_of_three(files) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files(chains=[chain(sweep_mode="7702")]))
    assert err.file.endswith("chains.yaml")
    assert (err.key, err.problem) == (
        "chains.anvil.sweep_mode",
        "must be auto, eip7702 or topup",
    )


def test_sweep_delegate_is_a_checksummed_address(files) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files(chains=[chain(sweep_delegate=TREASURY.lower())]))
    assert err.key == "chains.anvil.sweep_delegate"
    assert "not checksummed" in err.problem


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


YEAR = 365 * 86400
BETWEEN_1_AND_A_YEAR = f"must be between 1 and {YEAR}"
GAS_INDEX = "must be between 0 and 999 (deposit addresses are derived from index 1000 up)"

# (key, out-of-range value, problem) for each bounded ctripd.toml key.
TOML_CASES: list[tuple[str, Any, str]] = [
    ("daemon.shutdown_timeout", -1, f"must be between 0 and {YEAR}"),
    ("server.port", -5, "must be between 1 and 65535"),
    ("server.port", 0, "must be between 1 and 65535"),
    ("server.port", 65536, "must be between 1 and 65535"),
    ("server.max_body_bytes", 0, "must be at least 1"),
    ("server.max_lag_blocks", 0, "must be at least 1"),
    ("server.rate_limit", -1, f"must be between 0 and {2**31 - 1}"),
    ("server.rate_limit_window", 0, BETWEEN_1_AND_A_YEAR),
    ("database.pool_min", -1, "must not be negative"),
    ("database.pool_max", 0, "must be at least 1"),
    ("database.acquire_timeout", 0, f"must be positive and at most {365 * 86400}"),
    ("wallet.gas_wallet_index", -1, GAS_INDEX),
    ("wallet.gas_wallet_index", FIRST_DEPOSIT_INDEX, GAS_INDEX),
    ("payouts.wallet_index", -1, f"must be between 0 and {2**31 - 1}"),
    ("payments.default_expiry", 0, BETWEEN_1_AND_A_YEAR),
    ("payments.min_expiry", 0, BETWEEN_1_AND_A_YEAR),
    ("payments.max_expiry", YEAR + 1, BETWEEN_1_AND_A_YEAR),
    ("payments.underpayment_tolerance_bps", 10000, "must be between 0 and 9999"),
    ("payments.underpayment_tolerance_bps", -1, "must be between 0 and 9999"),
    ("payments.late_window", -1, f"must be between 0 and {YEAR}"),
    ("payments.expiry_interval", 0, BETWEEN_1_AND_A_YEAR),
    ("webhooks.retry_schedule", [5, 0], BETWEEN_1_AND_A_YEAR),
    ("webhooks.retry_schedule", [], "must list at least one delay in seconds"),
    ("webhooks.timeout", 0, BETWEEN_1_AND_A_YEAR),
    ("webhooks.concurrency", 0, "must be at least 1"),
    ("webhooks.retention_days", -1, "must be between 0 and 36500"),
    ("webhooks.secret_overlap", -1, f"must be between 0 and {YEAR}"),
    ("rates.min_sources", 0, "must be between 1 and 16"),
    ("rates.max_age", 0, BETWEEN_1_AND_A_YEAR),
    ("rates.refresh_interval", 0, BETWEEN_1_AND_A_YEAR),
    ("rates.timeout", 0, "must be positive and at most 60"),
    ("rates.create_deadline", 61, "must be positive and at most 60"),
    ("rates.depeg_tolerance_bps", 10000, "must be between 0 and 9999"),
    ("scanner.watch_after_sweep_days", -1, "must be between 0 and 36500"),
]

# (key under chains.anvil., out-of-range value, problem) for each bounded chains.yaml key.
CHAIN_CASES: list[tuple[str, Any, str]] = [
    ("chain_id", 0, f"must be between 1 and {2**63 - 1}"),
    ("confirmations", 0, f"must be between 1 and {2**31 - 1}"),
    ("poll_interval", 0, f"must be positive and at most {YEAR}"),
    ("rpc_timeout", -1.5, f"must be positive and at most {YEAR}"),
    ("start_block", -1, f"must be between 0 and {2**63 - 1}"),
    ("max_range", 0, "must be at least 1"),
    ("dust_threshold", -1, "must not be negative"),
    ("max_fee_per_gas", 0, "must be at least 1"),
    ("replace_after", 0, BETWEEN_1_AND_A_YEAR),
    ("stall_after", 0, BETWEEN_1_AND_A_YEAR),
    ("block_time", 0, f"must be positive and at most {YEAR}"),
    ("sweep_batch_size", 0, "must be between 1 and 1000"),
    ("native.decimals", 37, "must be between 0 and 36"),
    ("tokens.USDC.decimals", -1, "must be between 0 and 36"),
    ("tokens.USDC.dust_threshold", -5, "must not be negative"),
    ("native.min_credit", -1, "must not be negative"),
    ("tokens.USDC.min_credit", -1, "must not be negative"),
]


def chain_with(key: str, value: Any) -> dict[str, Any]:
    entry = chain()
    *path, name = key.split(".")
    target = entry
    for part in path:
        target = target[part]
    target[name] = value
    return entry


def error_key(key: str, value: Any) -> str:
    """The key as the error names it: a list's bad item by index."""
    if isinstance(value, list) and value:
        return f"{key}[{next(i for i, v in enumerate(value) if v <= 0)}]"
    return key


@pytest.mark.parametrize(("key", "value", "problem"), TOML_CASES)
def test_toml_key_out_of_range(files, key: str, value: Any, problem: str) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files(toml_key(key, value)))
    assert err.file.endswith("ctripd.toml")
    assert (err.key, err.problem) == (error_key(key, value), problem)


@pytest.mark.parametrize(("key", "value", "problem"), TOML_CASES)
def test_env_override_out_of_range(files, key: str, value: Any, problem: str) -> None:  # type: ignore[no-untyped-def]
    """An env override is checked like the file, and the error names the variable."""
    section, name = key.split(".")
    variable = f"CTRIPD_{section.upper()}__{name.upper()}"
    err = error_of(files(), {variable: json.dumps(value)})
    assert err.file == f"environment {variable}"
    assert (err.key, err.problem) == (error_key(key, value), problem)


@pytest.mark.parametrize(("key", "value", "problem"), CHAIN_CASES)
def test_chain_key_out_of_range(files, key: str, value: Any, problem: str) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files(chains=[chain_with(key, value)]))
    assert err.file.endswith("chains.yaml")
    assert (err.key, err.problem) == (f"chains.anvil.{key}", problem)


def test_every_numeric_key_is_bounded_and_tested() -> None:
    """A numeric key added to a config dataclass needs a range and a case above."""
    classes = {**{f"{s}.": c for s, c in _SECTIONS.items()}, "": ChainConfig}
    classes |= {"native.": NativeAsset, "tokens.USDC.": Token}
    numeric: set[str] = set()
    for prefix, cls in classes.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kinds = {*typing.get_args(hints[f.name]), hints[f.name]}
            if kinds & {int, float, list[int]}:
                numeric.add(f"{prefix}{f.name}")
                assert range_of(cls, f.name) is not None, f"{prefix}{f.name} has no range"
    assert numeric == {k for k, _, _ in TOML_CASES} | {k for k, _, _ in CHAIN_CASES}


@pytest.mark.parametrize(
    ("toml", "chain_overrides"),
    [
        (
            "gas_wallet_index = 999\n[server]\nport = 65535\n[database]\npool_min = 0\n"
            "pool_max = 1\n[daemon]\nshutdown_timeout = 0\n[payments]\nmin_expiry = 1\n"
            "default_expiry = 1\nmax_expiry = 1\nlate_window = 0\n"
            "underpayment_tolerance_bps = 9999\n[webhooks]\nretry_schedule = [1]\ntimeout = 1\n"
            "retention_days = 0\n",
            {"chain_id": 1, "confirmations": 1, "poll_interval": 0.1, "start_block": 0},
        ),
        (
            "[database]\npool_min = 7\npool_max = 7\n[payments]\nmin_expiry = 31536000\n"
            "default_expiry = 31536000\nmax_expiry = 31536000\nlate_window = 31536000\n",
            {
                "native": {"symbol": "ETH", "decimals": 36},
                "replace_after": 31536000,
                "stall_after": 31536000,
            },
        ),
    ],
)
def test_values_at_the_bounds_load(files, toml: str, chain_overrides: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    load_config(files(toml, chains=[chain(**chain_overrides)]), env={})


def test_gas_wallet_stays_below_the_deposit_addresses() -> None:
    """The bound follows the sequence deposit address indexes are drawn from."""
    schema = (ROOT / "ctripd" / "migrations" / "0001.initial-schema.sql").read_text()
    assert f"address_index_seq START WITH {FIRST_DEPOSIT_INDEX} " in schema


@pytest.mark.parametrize(
    ("toml", "env", "file", "key", "problem"),
    [
        (
            "[database]\npool_min = 5\npool_max = 4\n",
            {},
            "ctripd.toml",
            "database.pool_min",
            "must not be more than database.pool_max (4)",
        ),
        (
            "[database]\npool_max = 1\n",
            {},
            "ctripd.toml",
            "database.pool_max",
            "must not be less than database.pool_min (2)",
        ),
        (
            "",
            {"CTRIPD_DATABASE__POOL_MAX": "1"},
            "environment CTRIPD_DATABASE__POOL_MAX",
            "database.pool_max",
            "must not be less than database.pool_min (2)",
        ),
        (
            "[payments]\nmin_expiry = 4000\n",
            {},
            "ctripd.toml",
            "payments.min_expiry",
            "must not be more than payments.default_expiry (3600)",
        ),
        (
            "[payments]\ndefault_expiry = 30\n",
            {},
            "ctripd.toml",
            "payments.default_expiry",
            "must not be less than payments.min_expiry (60)",
        ),
        (
            "[payments]\ndefault_expiry = 2592001\n",
            {},
            "ctripd.toml",
            "payments.default_expiry",
            "must not be more than payments.max_expiry (2592000)",
        ),
        (
            "[payments]\nmax_expiry = 1800\n",
            {"CTRIPD_PAYMENTS__MAX_EXPIRY": "1800"},
            "environment CTRIPD_PAYMENTS__MAX_EXPIRY",
            "payments.max_expiry",
            "must not be less than payments.default_expiry (3600)",
        ),
    ],
)
def test_cross_key_order_names_the_key_that_was_set(  # type: ignore[no-untyped-def]
    files, toml: str, env: dict[str, str], file: str, key: str, problem: str
) -> None:
    err = error_of(files(toml), env)
    assert err.file.endswith(file)
    assert (err.key, err.problem) == (key, problem)


def test_committed_sample_config_loads() -> None:
    config = load_config(ROOT / "ctripd.toml", env={})
    assert config.server.port == 8080
    assert [c.name for c in config.chains] == ["anvil"]


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


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctripd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_cli_prints_one_line_and_exits_2(files) -> None:  # type: ignore[no-untyped-def]
    path = files(chains=[chain(treasury=TREASURY.lower())])
    result = run_cli("--config", str(path), "migrate")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "chains.yaml: chains.anvil.treasury: address is not checksummed" in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_env_override_out_of_range_prints_one_line_and_exits_2(files) -> None:  # type: ignore[no-untyped-def]
    """It used to end in an OverflowError traceback when the server bound the port."""
    result = run_cli("--config", str(files()), "run", env={"CTRIPD_SERVER__PORT": "-5"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "ctripd: config error: environment CTRIPD_SERVER__PORT: server.port: "
        "must be between 1 and 65535"
    ]


def test_cli_refuses_world_readable_mnemonic(files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = files()
    (tmp_path / "mnemonic").chmod(0o644)
    result = run_cli("--config", str(path), "run")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "wallet.mnemonic_file" in result.stderr and "chmod 600" in result.stderr


def test_rate_pairs_are_read_from_their_tables(files) -> None:  # type: ignore[no-untyped-def]
    from ctripd.config import RatePair

    path = files(
        """
[rates]
min_sources = 2
[rates.pairs."ETH/USD"]
sources = ["coinbase:ETH-USD", "kraken:XETHZUSD"]
[rates.pairs."USDC/USD"]
peg = true
""",
    )
    config = load_config(path, env={})
    assert config.rates.pairs == (
        RatePair("ETH", "USD", ["coinbase:ETH-USD", "kraken:XETHZUSD"]),
        RatePair("USDC", "USD", [], peg=True),
    )
    assert config.rates.pair("USDC", "USD") is not None


@pytest.mark.parametrize(
    ("table", "key", "problem"),
    [
        ('[rates.pairs."ETH"]\npeg = true', 'rates.pairs."ETH"', "expected ASSET/CURRENCY"),
        ('[rates.pairs."ETH/USD"]\nsources = []', 'rates.pairs."ETH/USD".sources', "at least one"),
        (
            '[rates.pairs."ETH/USD"]\nsources = ["bitstamp:ethusd"]',
            'rates.pairs."ETH/USD".sources[0]',
            "expected coinbase:..., kraken:..., feed:...",
        ),
        (
            '[rates.pairs."ETH/USD"]\nsources = ["feed:nowhere:' + USDC + '"]',
            'rates.pairs."ETH/USD".sources[0]',
            "unknown chain 'nowhere'",
        ),
        ('[rates.pairs."ETH/USD"]\npeg = "yes"', 'rates.pairs."ETH/USD".peg', "expected boolean"),
    ],
)
def test_bad_rate_pairs_name_their_key(files, table: str, key: str, problem: str) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files(table + "\n"))
    assert err.key == key
    assert problem in err.problem


def test_rate_pairs_are_not_set_by_the_environment(files) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files(), {"CTRIPD_RATES__PAIRS": "x"})
    assert (err.key, err.problem) == ("rates.pairs", "set it in the config file's tables")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8545", "ws://", "ws://[::1", "wss://a:99999"])
def test_ws_url_refused(files, url: str) -> None:  # type: ignore[no-untyped-def]
    err = error_of(files(chains=[chain(ws=url)]))
    assert err.key == "chains.anvil.ws"
    assert "not a ws(s) URL" in err.problem
    assert "\n" not in str(err)


def test_ws_url_and_watch_policy_read(files) -> None:  # type: ignore[no-untyped-def]
    path = files(
        toml="[scanner]\nwatch_after_sweep_days = 30\n",
        chains=[chain(ws="wss://node.example/key")],
    )
    config = load_config(path, env={})
    assert config.chains[0].ws == "wss://node.example/key"
    assert config.scanner.watch_after_sweep_days == 30
