"""How values look at the edges (API, CLI, webhook payloads): ids and timestamps."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import overload

PAYMENT_ID = re.compile(r"pay_[0-9a-f]{32}")
EVENT_ID = re.compile(r"evt_[0-9a-f]{32}")


def new_payment_id() -> str:
    return f"pay_{uuid.uuid4().hex}"


def new_event_id() -> str:
    return f"evt_{uuid.uuid4().hex}"


@overload
def iso(ts: datetime) -> str: ...
@overload
def iso(ts: None) -> None: ...
@overload
def iso(ts: datetime | None) -> str | None: ...
def iso(ts: datetime | None) -> str | None:
    """An API timestamp: ISO 8601 in UTC with a Z."""
    return ts.isoformat().replace("+00:00", "Z") if ts is not None else None
