"""A configured token's decimals are checked against its contract (`decimals()`): at start and by
`ctripd check`. A token configured with 6 decimals that has 18 would price every payment in it
10^12 too low."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ctripd.cli import main as cli
from ctripd.config import ConfigError
from ctripd.dev import tokens as devtokens
from ctripd.dev.devnet import AnvilProcess

DEPLOYER = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
TREASURY = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def chain(anvil: AnvilProcess, tokens: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "anvil",
        "chain_id": 31337,
        "rpc": [anvil.url],
        "native": {"symbol": "ETH", "decimals": 18},
        "treasury": TREASURY,
        "tokens": tokens,
    }


@pytest.fixture
def td18(anvil: AnvilProcess) -> str:
    return devtokens.deploy_token(anvil.url, "erc20_18", DEPLOYER)


async def test_start_refuses_a_token_with_other_decimals(
    write_config, make_client, anvil: AnvilProcess, td18: str
) -> None:  # type: ignore[no-untyped-def]
    config = write_config(chains=[chain(anvil, {"BSCUSD": {"address": td18, "decimals": 6}})])
    with pytest.raises(ConfigError) as caught:
        await make_client(config)
    err = caught.value
    assert err.file.endswith("chains.yaml")
    assert err.key == "chains.anvil.tokens.BSCUSD.decimals"
    assert err.problem == f"the contract at {td18} has 18 decimals, configured 6"


async def test_check_names_the_chain_and_token(
    write_config, anvil: AnvilProcess, td18: str, capsys
) -> None:  # type: ignore[no-untyped-def]
    td6 = devtokens.deploy_token(anvil.url, "erc20_6", DEPLOYER)
    tokens = {
        "BSCUSD": {"address": td18, "decimals": 6},
        "TD6": {"address": td6, "decimals": 6},
        "NOPE": {"address": TREASURY, "decimals": 6},
    }
    config = write_config(chains=[chain(anvil, tokens)])
    code = await asyncio.to_thread(cli.main, ["--config", config.path, "check"])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert (
        f"FAIL chain anvil token BSCUSD: the contract at {td18} has 18 decimals, configured 6"
        in out
    )
    assert "ok   chain anvil token TD6: 6 decimals" in out
    assert any(
        line.startswith("FAIL chain anvil token NOPE: ") and "no decimals()" in line for line in out
    )
