"""A chain whose nodes stopped following it: judged by the head block's own timestamp, it is
`stalled` (readyz, `/v1/chains`, metric, log), and expiry waits, since transfers mined since are
unread. The node here is an Anvil whose blocks are an hour old until told otherwise."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs
from test_expiry import _payments
from test_multiprocess import bearer
from test_scanner_support import chain_entry

from ctripd.dev.devnet import AnvilProcess, start_anvil
from ctripd.http.keys import WATCHERS
from ctripd.ledger import expiry


@pytest.fixture
def old_node() -> Iterator[AnvilProcess]:
    """A node stuck an hour back: every block it mines carries an hour-old timestamp."""
    node = start_anvil(extra_args=["--timestamp", str(int(time.time()) - 3600)])
    yield node
    node.stop()


def resume(node: AnvilProcess) -> None:
    """The node follows its chain again: a block of now."""
    node.rpc("evm_setNextBlockTimestamp", [int(time.time())])
    node.rpc("evm_mine")


async def test_a_stuck_node_stalls_the_chain_and_expiry_waits(  # type: ignore[no-untyped-def]
    write_config, make_client, pool, old_node
) -> None:
    """A frozen node used to keep the chain "caught up" as of every scan, so expiry expired
    payments that may have been paid on the real chain, and readyz showed lag 0."""
    client = await make_client(write_config(chains=[chain_entry(old_node, stall_after=60)]))
    watcher = client.server.app[WATCHERS]["anvil"]
    headers = await bearer(pool)
    (payment_id,) = await _payments(pool, 1)
    await pool.execute("UPDATE payments SET expires_at = now() WHERE id = $1", payment_id)

    with capture_logs() as logs:
        await watcher.run_once()
        await watcher.run_once()
    stalls = [e for e in logs if e["event"] == "chain.stalled"]
    assert len(stalls) == 1 and stalls[0]["head_age_s"] >= 3600 and stalls[0]["stall_after"] == 60
    assert await expiry.run_once(pool, operator_url=True) == 0
    resp = await client.get("/readyz")
    body = await resp.json()
    assert resp.status == 503
    assert body["checks"]["chains"]["anvil"].startswith("error: stalled: head block")
    (row,) = (await (await client.get("/v1/chains", headers=headers)).json())["data"]
    assert row["stalled"] is True and row["lag"] == 0
    metrics = await (await client.get("/metrics")).text()
    assert 'ctripd_chain_stalled{chain="anvil"} 1.0' in metrics

    resume(old_node)
    with capture_logs() as logs:
        await watcher.run_once()
    assert [e["event"] for e in logs if e["event"].startswith("chain.re")] == ["chain.resumed"]
    assert (await client.get("/readyz")).status == 200
    (row,) = (await (await client.get("/v1/chains", headers=headers)).json())["data"]
    assert row["stalled"] is False
    assert 'ctripd_chain_stalled{chain="anvil"} 0.0' in await (await client.get("/metrics")).text()
    assert await expiry.run_once(pool, operator_url=True) == 1


@pytest.fixture
def behind_node() -> Iterator[AnvilProcess]:
    """A node a minute behind its chain: younger than `stall_after`, older than two blocks."""
    node = start_anvil(extra_args=["--timestamp", str(int(time.time()) - 60)])
    yield node
    node.stop()


async def test_a_node_behind_its_chain_is_not_read_as_now(  # type: ignore[no-untyped-def]
    write_config, make_client, pool, behind_node
) -> None:
    """A head younger than `stall_after` used to count as the chain read up to now: a node a
    minute behind let payments expire (and cancels pass) over transfers it had not seen yet."""
    client = await make_client(write_config(chains=[chain_entry(behind_node, block_time=12)]))
    watcher = client.server.app[WATCHERS]["anvil"]
    (payment_id,) = await _payments(pool, 1)
    await pool.execute("UPDATE payments SET expires_at = now() WHERE id = $1", payment_id)
    await watcher.run_once()
    assert (await client.get("/readyz")).status == 200  # behind, not stalled
    assert await expiry.run_once(pool, operator_url=True) == 0

    resume(behind_node)
    await watcher.run_once()
    assert await expiry.run_once(pool, operator_url=True) == 1
