"""The README's configuration reference against the config dataclasses: every key, its default and
its env override are documented, and nothing documented is gone from the code."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from ctripd.config import (
    _NESTED_KEYS,
    _SECTIONS,
    ENV_PREFIX,
    ChainConfig,
    NativeAsset,
    RatePair,
    Token,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def reference_tables() -> list[dict[str, list[str]]]:
    """The tables of the "Configuration reference" section: key → the row's other cells."""
    text = README.read_text()
    match = re.search(r"^### Configuration reference\n(.*?)(?=^#{2,3} )", text, re.M | re.S)
    assert match is not None, "README.md has no '### Configuration reference' section"
    tables: list[dict[str, list[str]]] = []
    in_table = False
    for line in match.group(1).splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not in_table:
            tables.append({})
            in_table = True
        key = re.fullmatch(r"`([^`]+)`", cells[0])
        if key is not None:
            assert key.group(1) not in tables[-1], f"{key.group(1)} documented twice"
            tables[-1][key.group(1)] = cells[1:]
    return tables


def literal(value: Any) -> str:
    """A default as the reference writes it (TOML/YAML syntax)."""
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if value is None:
        return "none"
    return f"`{json.dumps(value, separators=(', ', ': '))}`"


def default(field: dataclasses.Field[Any]) -> str:
    if field.default is not dataclasses.MISSING:
        return literal(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return literal(field.default_factory())
    return "required"


def test_every_toml_key_is_documented_with_its_default_and_env_override() -> None:
    toml_table = reference_tables()[0]
    expected = {
        f"{section}.{f.name}": (default(f), f"`{ENV_PREFIX}{section.upper()}__{f.name.upper()}`")
        for section, cls in _SECTIONS.items()
        for f in dataclasses.fields(cls)
        if f"{section}.{f.name}" not in _NESTED_KEYS
    }
    assert sorted(toml_table) == sorted(expected), "keys differ from ctripd.config"
    for key, (value, env) in expected.items():
        documented_default, documented_env, meaning = toml_table[key]
        assert documented_default == value, f"{key}: default"
        assert documented_env == env, f"{key}: env override"
        assert meaning, f"{key}: no meaning given"


def test_every_chain_key_is_documented_with_its_default() -> None:
    chains_table = reference_tables()[1]
    expected: dict[str, str] = {}
    for f in dataclasses.fields(ChainConfig):
        if f.name == "native":
            expected |= {f"native.{g.name}": default(g) for g in dataclasses.fields(NativeAsset)}
            continue
        expected[f.name] = default(f)
        if f.name == "tokens":
            expected |= {
                f"tokens.<SYMBOL>.{g.name}": default(g)
                for g in dataclasses.fields(Token)
                if g.name != "symbol"  # the mapping's key
            }
    assert sorted(chains_table) == sorted(expected), "keys differ from ctripd.config"
    for key, value in expected.items():
        documented_default, meaning = chains_table[key]
        assert documented_default == value, f"{key}: default"
        assert meaning, f"{key}: no meaning given"


def test_every_rate_pair_key_is_documented_with_its_default() -> None:
    pairs_table = reference_tables()[2]
    expected = {
        f.name: default(f)
        for f in dataclasses.fields(RatePair)
        if f.name not in ("asset", "currency")  # the table's name
    }
    assert sorted(pairs_table) == sorted(expected), "keys differ from ctripd.config"
    for key, value in expected.items():
        documented_default, meaning = pairs_table[key]
        assert documented_default == value, f"{key}: default"
        assert meaning, f"{key}: no meaning given"


def test_the_unit_allows_no_core_dumps() -> None:
    """A core dump would hold the mnemonic and keys of the process's memory."""
    unit = (README.parent / "systemd" / "ctripd.service").read_text()
    assert "\nLimitCORE=0\n" in unit


def test_the_unit_waits_for_ready_and_watches_the_event_loop() -> None:
    """ctripd sends READY=1 and WATCHDOG=1 (ctripd.sdnotify); the unit must ask for them."""
    unit = (README.parent / "systemd" / "ctripd.service").read_text()
    for line in ("Type=notify", "NotifyAccess=main", "WatchdogSec=30", "Restart=on-failure"):
        assert f"\n{line}\n" in unit, line
