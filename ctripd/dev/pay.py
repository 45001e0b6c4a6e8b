"""`ctripd dev pay`: pay a payment on the devnet from Anvil's first unlocked, funded account.

Native coin goes by `eth_sendTransaction`; a test token is minted to the sender first, then
transferred. Refused on public chains: it is for watching the whole flow on a dev node.
"""

from __future__ import annotations

import asyncio

from ctripd import db
from ctripd.config import PUBLIC_CHAIN_IDS, Config
from ctripd.dev import tokens
from ctripd.dev.devnet import rpc_call, wait_receipt
from ctripd.errors import CtripdError
from ctripd.ledger.objects import load_payment
from ctripd.money import AmountError, to_base_units


async def dev_pay(config: Config, payment_id: str, amount: str | None) -> str:
    """Pay `amount` (asset units; default: what is still due) to the payment; returns the tx."""
    dsn = await asyncio.to_thread(db.database_dsn, config)
    conn = await db.connect(dsn)
    try:
        payment = await load_payment(conn, payment_id)
    finally:
        await conn.close()
    if payment is None:
        raise CtripdError(f"no payment {payment_id}")
    chain = config.chain(payment["chain"])
    if chain is None:
        raise CtripdError(f"payment {payment_id} is on chain {payment['chain']}, not configured")
    url = chain.rpc[0]
    node_chain_id = int(await asyncio.to_thread(rpc_call, url, "eth_chainId"), 16)
    if node_chain_id in PUBLIC_CHAIN_IDS or node_chain_id != chain.chain_id:
        raise CtripdError(f"refusing to pay on chain id {node_chain_id}: dev pay is for dev nodes")

    if amount is None:
        units = int(payment["amount_base_units"]) - int(payment["amount_received_base_units"])
        if units <= 0:
            raise CtripdError(f"payment {payment_id} has received its amount; pass --amount")
    else:
        try:
            units = to_base_units(amount, payment["decimals"])
        except AmountError as exc:
            raise CtripdError(f"--amount {amount!r}: {exc}") from None

    accounts = await asyncio.to_thread(rpc_call, url, "eth_accounts")
    if not accounts:
        raise CtripdError(f"the node at {url} has no unlocked account to pay from")
    sender: str = accounts[0]
    token = payment["token_address"]
    if token is None:
        tx = {"from": sender, "to": payment["address"], "value": hex(units)}
        tx_hash: str = await asyncio.to_thread(rpc_call, url, "eth_sendTransaction", [tx])
        await asyncio.to_thread(wait_receipt, url, tx_hash)
        return tx_hash
    await asyncio.to_thread(tokens.mint, url, token, sender, units, sender)
    return await asyncio.to_thread(
        tokens.token_transfer, url, token, sender, payment["address"], units
    )
