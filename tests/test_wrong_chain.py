"""Funds sent on the wrong network: a deposit address is the same on every EVM chain, so every
configured chain's scanner watches every payment's address. Funds on another chain than the
payment's are recorded, reported (`payment.transfer_received` naming the chain) and held: never
counted, listed as held by reconcile."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest
from test_scanner_support import (
    ETH,
    Rig,
    chain_entry,
    insert_payment,
    mine,
    payment,
    send_native,
)

from ctripd.chain.rpc import RpcClient
from ctripd.dev.devnet import AnvilProcess, start_anvil
from ctripd.ledger import reconcile
from ctripd.ledger.objects import load_payment


@pytest.fixture(scope="module")
def beta_node() -> Iterator[AnvilProcess]:
    node = start_anvil(chain_id=31338)
    yield node
    node.stop()


@pytest.fixture
def beta(beta_node: AnvilProcess) -> Iterator[AnvilProcess]:
    snapshot = beta_node.rpc("evm_snapshot")
    yield beta_node
    beta_node.rpc("evm_revert", [snapshot])


async def test_funds_on_another_chain_are_recorded_reported_and_held(  # type: ignore[no-untyped-def]
    write_config, pool, anvil, beta
) -> None:
    """Another chain's scanner used to watch only its own payments' addresses: funds a payer
    sent on the wrong network were invisible, to the merchant and to reconcile alike."""
    chains = [
        chain_entry(anvil),
        chain_entry(beta, name="beta", chain_id=31338, native={"symbol": "BETH", "decimals": 18}),
    ]
    config = write_config(chains=chains)
    rig = Rig()
    try:
        on_anvil, on_beta = rig.watcher(config, "anvil"), rig.watcher(config, "beta")
        await on_anvil.run_once()
        await on_beta.run_once()
        pid, address = await insert_payment(pool, config, ETH)
        wrong = send_native(beta, address, 3 * ETH)  # paid on the wrong network
        mine(beta, 2)
        await on_anvil.run_once()
        await on_beta.run_once()

        row = await payment(pool, pid)
        assert (row["status"], int(row["amount_received"])) == ("pending", 0)
        (recorded,) = await pool.fetch("SELECT * FROM transfers WHERE payment_id = $1", pid)
        assert (recorded["chain"], recorded["tx_hash"], recorded["asset"]) == (
            "beta",
            wrong,
            "BETH",
        )
        events = await pool.fetch(
            "SELECT type, payload FROM events WHERE payment_id = $1 ORDER BY seq", pid
        )
        assert [e["type"] for e in events] == ["payment.transfer_received"]
        reported = events[0]["payload"]["data"]["transfer"]
        assert (reported["chain"], reported["asset"], reported["amount"]) == ("beta", "BETH", "3")
        assert reported["confirmations"] == 3
        rendered = await load_payment(pool, pid)
        assert rendered is not None and rendered["amount_received"] == "0"
        assert [
            (a["chain"], a["asset"], a["amount"]) for a in rendered["transfer_summary"]["assets"]
        ] == [("beta", "BETH", "3")]

        # Paid on its own chain: only that counts, and the funds on beta stay held there.
        send_native(anvil, address, ETH)
        mine(anvil, 2)
        await on_anvil.run_once()
        await on_beta.run_once()
        row = await payment(pool, pid)
        assert (row["status"], int(row["amount_received"])) == ("confirmed", ETH)
        rendered = await load_payment(pool, pid)
        assert rendered is not None
        assert [(a["chain"], a["amount"]) for a in rendered["transfer_summary"]["assets"]] == [
            ("anvil", "1"),
            ("beta", "3"),
        ]

        async with aiohttp.ClientSession() as session:
            beta_config = config.chain("beta")
            assert beta_config is not None
            report = await reconcile.reconcile(
                pool, RpcClient("beta", [beta.url], session), beta_config
            )
        assert report.mismatches == []
        (held,) = report.held
        assert (held.payment_id, held.asset, held.amount) == (pid, "BETH", 3 * ETH)
        assert held.reason == "sent on beta for a payment on anvil"
    finally:
        await rig.close()
