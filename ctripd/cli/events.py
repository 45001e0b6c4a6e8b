"""`ctripd events list|redeliver`: every merchant's webhook events, for the operator."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import asyncpg

from ctripd.cli.common import add_limit, listing_limit, print_json, print_table, run_on_database
from ctripd.config import Config
from ctripd.ledger.events import STATUSES, list_events, redeliver

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def cmd_list(args: argparse.Namespace) -> int:
    limit = listing_limit(args.status, STATUSES, args.limit, MAX_LIMIT)

    async def work(config: Config, pool: asyncpg.Pool) -> list[dict[str, Any]]:
        events, _ = await list_events(
            pool, None, payment_id=args.payment_id, status=args.status, limit=limit
        )
        return events

    events = run_on_database(args, work)
    if args.json:
        print_json(events)
        return 0
    print_table(
        ("ID", "TYPE", "PAYMENT", "STATUS", "DELIVERIES", "ATTEMPTS", "CREATED", "LAST ERROR"),
        [
            (
                e["id"],
                e["type"],
                e["payment_id"] or "-",
                e["status"],
                len(e["deliveries"]),
                sum(len(d["attempts"]) for d in e["deliveries"]),
                e["created_at"] or "",
                next((d["last_error"] for d in e["deliveries"] if d["last_error"]), "")[:60],
            )
            for e in events
        ],
    )
    return 0


def cmd_redeliver(args: argparse.Namespace) -> int:
    async def work(config: Config, pool: asyncpg.Pool) -> dict[str, Any]:
        async with pool.acquire() as conn:
            return await redeliver(conn, args.id, None, operator_url=bool(config.webhooks.url))

    event = run_on_database(args, work)
    print(f"event {event['id']} queued for redelivery", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("events", help="list webhook events and redeliver them")
    esub = parser.add_subparsers(dest="events_command", required=True)
    listing = esub.add_parser("list", help="list events with their delivery attempts")
    listing.add_argument("--payment-id", help="only this payment's events")
    listing.add_argument("--status", help=f"only events in this status ({', '.join(STATUSES)})")
    add_limit(listing, DEFAULT_LIMIT, MAX_LIMIT)
    listing.add_argument("--json", action="store_true", help="JSON output, attempts included")
    listing.set_defaults(func=cmd_list)
    again = esub.add_parser(
        "redeliver", help="send an event again to each live endpoint that takes it"
    )
    again.add_argument("id", help="event id (evt_…)")
    again.set_defaults(func=cmd_redeliver)
