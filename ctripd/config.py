"""Configuration: `ctripd.toml` + `chains.yaml` → frozen typed objects.

Every problem is reported as one `ConfigError` line naming the file, the key and what is wrong,
so an operator can fix it without reading a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import stat
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from eth_utils import is_checksum_address, is_hex_address, to_checksum_address

ENV_PREFIX = "CTRIPD_"

# Chain ids of public networks on which `ctripd dev` refuses to run a throw-away wallet.
PUBLIC_CHAIN_IDS = frozenset({1, 10, 56, 100, 137, 250, 324, 8453, 42161, 43114, 59144, 534352})

# Deposit addresses are derived from this index up (`address_index_seq START WITH 1000` in
# migrations/0001): the gas wallet must stay below it, or it could be some payment's address.
FIRST_DEPOSIT_INDEX = 1000
# Where the gas wallet is derived: its own hardened account, or (as ctripd did before) the
# deposit addresses' chain.
GAS_WALLETS = ("hardened", "deposit-branch")
# How a chain's deposits are swept: "topup" (gas top-up, then the deposit's own transaction),
# "eip7702" (batches through the sweep delegate), "auto" (eip7702 where the chain supports it).
SWEEP_MODES = ("auto", "eip7702", "topup")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "json", "console")
# Longest duration any key accepts: more is a typo, and huge values overflow datetime arithmetic.
MAX_SECONDS = 365 * 86400
# Largest values of the Postgres INTEGER / BIGINT columns a key is stored in.
INT_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1


class ConfigError(Exception):
    """A configuration problem, rendered as one line: `file: key: problem`."""

    def __init__(self, file: str | Path, key: str, problem: str) -> None:
        self.file = str(file)
        self.key = key
        self.problem = problem
        super().__init__(f"{self.file}: {key}: {problem}" if key else f"{self.file}: {problem}")


@dataclass(frozen=True)
class _Range:
    """Accepted values of a numeric key: from `low` (excluded if `open`) up to `high`."""

    low: int
    high: int | None = None
    open: bool = False
    why: str = ""

    def problem(self, value: float) -> str | None:
        """What is wrong with `value`, or None if it is in range."""
        above_low = value > self.low if self.open else value >= self.low
        if above_low and (self.high is None or value <= self.high):
            return None
        if self.open:
            problem = "must be positive"
            if self.high is not None:
                problem += f" and at most {self.high}"
        elif self.high is not None:
            problem = f"must be between {self.low} and {self.high}"
        else:
            problem = "must not be negative" if self.low == 0 else f"must be at least {self.low}"
        return f"{problem} ({self.why})" if self.why else problem


def _bounded(
    low: int, high: int | None = None, *, open: bool = False, why: str = ""
) -> Mapping[str, _Range]:
    """Field metadata of a numeric key: its accepted range (for a list, each item's); cross-key
    rules are in `_validate`."""
    return {"range": _Range(low, high, open, why)}


def range_of(cls: type, name: str) -> _Range | None:
    """The accepted range of the numeric key `cls.name`; None for other keys."""
    found: _Range | None = next(
        f.metadata.get("range") for f in dataclasses.fields(cls) if f.name == name
    )
    return found


_SECONDS = _bounded(1, MAX_SECONDS)
_DECIMALS = _bounded(0, 36)


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: str = ".state"
    chains_file: str = "chains.yaml"
    migrate_on_start: bool = True
    shutdown_timeout: int = field(default=30, metadata=_bounded(0, MAX_SECONDS))


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = field(default=8080, metadata=_bounded(1, 65535))
    max_body_bytes: int = field(default=65536, metadata=_bounded(1))
    metrics_public: bool = True
    # /readyz fails when a chain's scanner is more blocks than this behind the head.
    max_lag_blocks: int = field(default=100, metadata=_bounded(1))
    # Requests per window each API key may make (a token bucket per key and process); 0: no
    # limit. A key's own limit (`api-key create --rate-limit`) overrides it.
    rate_limit: int = field(default=0, metadata=_bounded(0, INT_MAX))
    rate_limit_window: int = field(default=60, metadata=_SECONDS)


@dataclass(frozen=True)
class DatabaseConfig:
    dsn: str = ""
    pool_min: int = field(default=2, metadata=_bounded(0))
    pool_max: int = field(default=10, metadata=_bounded(1))
    acquire_timeout: float = field(default=10.0, metadata=_bounded(0, MAX_SECONDS, open=True))


@dataclass(frozen=True)
class WalletConfig:
    mnemonic_file: str = ""
    xpub: str = ""
    gas_wallet_index: int = field(
        default=0,
        metadata=_bounded(
            0,
            FIRST_DEPOSIT_INDEX - 1,
            why=f"deposit addresses are derived from index {FIRST_DEPOSIT_INDEX} up",
        ),
    )
    # "hardened": m/44'/60'/1'/0/<gas_wallet_index>; "deposit-branch": m/44'/60'/0'/0/<index>,
    # beside the deposit addresses, as before the gas wallet had an account of its own.
    gas_wallet: str = "hardened"
    sweep: bool = True


@dataclass(frozen=True)
class PaymentsConfig:
    default_expiry: int = field(default=3600, metadata=_SECONDS)
    min_expiry: int = field(default=60, metadata=_SECONDS)
    max_expiry: int = field(default=30 * 86400, metadata=_SECONDS)
    # Underpayment tolerated as paid, in basis points of the amount due (100 = 1 %).
    # 10000 would count a payment of nothing as paid.
    underpayment_tolerance_bps: int = field(default=0, metadata=_bounded(0, 9999))
    late_window: int = field(default=86400, metadata=_bounded(0, MAX_SECONDS))
    expiry_interval: int = field(default=10, metadata=_SECONDS)


@dataclass(frozen=True)
class ScannerConfig:
    # Days after its last confirmed sweep that a fully swept payment's address leaves the watched
    # set (applied when the set is loaded, at start). Unset: watched forever, so that funds sent
    # to an old address later are still recorded.
    watch_after_sweep_days: int | None = field(default=None, metadata=_bounded(0, 36500))


@dataclass(frozen=True)
class WebhooksConfig:
    url: str = ""
    secret_file: str = ""
    # During secret rotation, the previous secret still signs, so receivers can switch over.
    previous_secret_file: str = ""
    retry_schedule: list[int] = field(
        default_factory=lambda: [5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400],
        metadata=_SECONDS,
    )
    # A timeout of 0 is no timeout at all in aiohttp: a hanging receiver would hold a delivery.
    timeout: int = field(default=10, metadata=_SECONDS)
    concurrency: int = field(default=16, metadata=_bounded(1))
    # Delivered and failed events (with their delivery attempts) older than this are pruned.
    retention_days: int = field(default=90, metadata=_bounded(0, 36500))
    # After an endpoint's secret is rotated, the previous one keeps signing this long.
    secret_overlap: int = field(default=86400, metadata=_bounded(0, MAX_SECONDS))
    # SSRF guard: merchants' endpoints may not reach private (non-loopback) addresses unless set.
    allow_private_targets: bool = False


_DAILY_LIMIT = re.compile(r"([A-Za-z0-9._-]{1,32})=((0|[1-9][0-9]*)(\.[0-9]+)?)")


@dataclass(frozen=True)
class PayoutsConfig:
    # The payout wallet: m/44'/60'/1'/0/<wallet_index>, beside the gas wallet on its account.
    wallet_index: int = field(default=1, metadata=_bounded(0, INT_MAX))
    # Payouts wait in `pending_approval` until `ctripd payouts approve ID`.
    require_approval: bool = False
    # "SYMBOL=amount": what one merchant may pay out of an asset per chain in 24 hours.
    daily_limits: list[str] = field(default_factory=list)

    def daily_limit(self, symbol: str) -> str | None:
        """The 24-hour limit of `symbol` in asset units (a decimal string), None: none."""
        for item in self.daily_limits:
            name, _, amount = item.partition("=")
            if name == symbol:
                return amount
        return None


# Rate sources a pair may name: an exchange's public ticker, or a price-feed aggregator on a chain.
RATE_SOURCE_KINDS = ("coinbase", "kraken", "feed")
_PAIR_KEY = re.compile(r"([A-Za-z0-9._-]{1,32})/([A-Z]{3})")
_MARKET = re.compile(r"[A-Za-z0-9._-]{1,32}")


@dataclass(frozen=True)
class RatePair:
    """How one asset (by symbol, on every chain that has it) is quoted in one fiat currency."""

    asset: str
    currency: str
    # "coinbase:ETH-USD", "kraken:XETHZUSD", "feed:<chain>:<aggregator address>".
    sources: list[str] = field(default_factory=list)
    # A stablecoin: quoted 1:1 to the currency, unless its fresh sources show a depeg.
    peg: bool = False
    # Fresh sources the quote needs; 0: `[rates] min_sources`.
    min_sources: int = field(default=0, metadata=_bounded(0, 16))


@dataclass(frozen=True)
class RatesConfig:
    min_sources: int = field(default=2, metadata=_bounded(1, 16))
    max_age: int = field(default=300, metadata=_SECONDS)
    refresh_interval: int = field(default=30, metadata=_SECONDS)
    timeout: float = field(default=5.0, metadata=_bounded(0, 60, open=True))
    create_deadline: float = field(default=1.0, metadata=_bounded(0, 60, open=True))
    depeg_tolerance_bps: int = field(default=200, metadata=_bounded(0, 9999))
    coinbase_url: str = "https://api.exchange.coinbase.com"
    kraken_url: str = "https://api.kraken.com"
    # From the `[rates.pairs."ASSET/CURRENCY"]` tables (not settable by environment variables).
    pairs: tuple[RatePair, ...] = ()

    def pair(self, asset: str, currency: str) -> RatePair | None:
        return next((p for p in self.pairs if (p.asset, p.currency) == (asset, currency)), None)


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True)
class NativeAsset:
    symbol: str
    decimals: int = field(default=18, metadata=_DECIMALS)
    # Transfers of fewer base units are dust: counted, but recorded in aggregate, unannounced.
    min_credit: int = field(default=0, metadata=_bounded(0))


@dataclass(frozen=True)
class Token:
    symbol: str
    address: str
    decimals: int = field(metadata=_DECIMALS)
    # Token balances at or below this many base units of the token wait instead of being swept.
    dust_threshold: int = field(default=0, metadata=_bounded(0))
    # Transfers of fewer base units are dust: counted, but recorded in aggregate, unannounced.
    min_credit: int = field(default=0, metadata=_bounded(0))


@dataclass(frozen=True)
class ChainConfig:
    name: str
    chain_id: int = field(metadata=_bounded(1, BIGINT_MAX))
    rpc: list[str]
    native: NativeAsset
    treasury: str
    # WebSocket URL of a node of the chain: its new heads start a scan at once (polling goes on).
    ws: str | None = None
    confirmations: int = field(default=12, metadata=_bounded(1, INT_MAX))
    poll_interval: float = field(default=5.0, metadata=_bounded(0, MAX_SECONDS, open=True))
    tokens: dict[str, Token] = field(default_factory=dict)
    trace: bool = False
    start_block: int | None = field(default=None, metadata=_bounded(0, BIGINT_MAX))
    # Largest block range asked of eth_getLogs and of one scan step; shrinks on provider limits.
    max_range: int = field(default=500, metadata=_bounded(1))
    rpc_timeout: float = field(default=10.0, metadata=_bounded(0, MAX_SECONDS, open=True))
    # Native balances at or below this many wei wait instead of being swept (tokens have their own).
    dust_threshold: int = field(default=0, metadata=_bounded(0))
    # Fee cap for sweeps, in wei per gas.
    max_fee_per_gas: int = field(default=500 * 10**9, metadata=_bounded(1))
    # A sweep not mined after this many seconds is replaced with a higher fee.
    replace_after: int = field(default=120, metadata=_SECONDS)
    # Seconds between the chain's blocks: a head younger than two of them shows the chain as of
    # the moment it was read (cancel and expiry trust it); an older one only as of its own time.
    block_time: float = field(default=12.0, metadata=_bounded(0, MAX_SECONDS, open=True))
    # A head block older than this many seconds: the chain (or every node of it) is stalled.
    stall_after: int = field(default=120, metadata=_SECONDS)
    # "auto" | "eip7702" | "topup" (SWEEP_MODES).
    sweep_mode: str = "auto"
    # Most deposits one EIP-7702 batch sweeps (fewer if the block gas limit demands).
    sweep_batch_size: int = field(default=100, metadata=_bounded(1, 1000))
    # An already deployed sweep delegate for `treasury` (its code is checked); else ctripd
    # deploys one from the gas wallet on first use.
    sweep_delegate: str | None = None

    def dust_threshold_of(self, token: str | None) -> int:
        """Base units of the asset (native for None) at or below which a balance waits."""
        if token is None:
            return self.dust_threshold
        match = self.token_at(token)
        if match is None:
            raise KeyError(f"{token} is not a token of chain {self.name}")
        return match.dust_threshold

    def min_credit_of(self, token: str | None) -> int:
        """Base units of the asset (native for None) below which a transfer is dust."""
        if token is None:
            return self.native.min_credit
        match = self.token_at(token)
        return match.min_credit if match is not None else 0

    def token_at(self, address: str) -> Token | None:
        """The configured token at `address` (any case), or None."""
        return next((t for t in self.tokens.values() if t.address.lower() == address.lower()), None)

    def asset_at(self, token_address: str | None) -> tuple[str, int] | None:
        """(symbol, decimals) of the native coin (None) or of a configured token; None if the
        token is not one of the chain's."""
        if token_address is None:
            return self.native.symbol, self.native.decimals
        token = self.token_at(token_address)
        return (token.symbol, token.decimals) if token else None

    def asset(self, symbol: str) -> tuple[str | None, int] | None:
        """(token address or None for native, decimals) of an asset symbol, or None if unknown."""
        if symbol == self.native.symbol:
            return None, self.native.decimals
        token = self.tokens.get(symbol)
        return (token.address, token.decimals) if token else None


@dataclass(frozen=True)
class Config:
    path: str
    daemon: DaemonConfig
    server: ServerConfig
    database: DatabaseConfig
    wallet: WalletConfig
    payments: PaymentsConfig
    scanner: ScannerConfig
    webhooks: WebhooksConfig
    log: LogConfig
    chains: tuple[ChainConfig, ...]
    rates: RatesConfig = field(default_factory=RatesConfig)
    payouts: PayoutsConfig = field(default_factory=PayoutsConfig)

    @property
    def state_dir(self) -> Path:
        return Path(self.daemon.state_dir)

    def chain(self, name: str) -> ChainConfig | None:
        return next((c for c in self.chains if c.name == name), None)


def _one_of(choices: tuple[str, ...]) -> str:
    """The choices of an enum-like key as its error names them: "a, b or c"."""
    return ", ".join(choices[:-1]) + " or " + choices[-1]


def _check_range(cls: type, name: str, value: Any, file: str, key: str) -> None:
    """Refuse a value of `cls.name` outside its field's range; `key` is the key as written."""
    bounds = range_of(cls, name)
    if bounds is None or value is None:
        return
    items = enumerate(value) if isinstance(value, list) else [(None, value)]
    for i, item in items:
        problem = bounds.problem(item)
        if problem is not None:
            raise ConfigError(file, key if i is None else f"{key}[{i}]", problem)


_SECTIONS: dict[str, type] = {
    "daemon": DaemonConfig,
    "server": ServerConfig,
    "database": DatabaseConfig,
    "wallet": WalletConfig,
    "payments": PaymentsConfig,
    "scanner": ScannerConfig,
    "webhooks": WebhooksConfig,
    "log": LogConfig,
    "rates": RatesConfig,
    "payouts": PayoutsConfig,
}
# Keys read from nested tables of the file, which no environment variable sets.
_NESTED_KEYS = frozenset({"rates.pairs"})


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return {"int": "integer", "str": "string", "bool": "boolean", "float": "number"}.get(
            tp.__name__, tp.__name__
        )
    return str(tp)


def _coerce(value: Any, tp: Any, file: str, key: str) -> Any:
    """Check `value` against the annotation `tp`; convert where lossless (int → float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], file, key)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(file, key, f"expected a list, got {_describe(value)}")
        return [_coerce(v, item, file, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(file, key, f"expected boolean, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(file, key, f"expected integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(file, key, f"expected number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(file, key, f"expected string, got {_describe(value)}")
        return value
    raise AssertionError(f"unsupported config type {tp!r}")


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    return {
        bool: "boolean",
        int: "integer",
        float: "number",
        str: "string",
        list: "list",
        dict: "table",
    }.get(type(value), type(value).__name__) + f" {value!r}"[:60]


def _build(cls: type, raw: Mapping[str, Any], file: str, prefix: str, skip: set[str]) -> Any:
    """Build dataclass `cls` from `raw`, refusing unknown keys and missing required ones."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(file, f"{prefix}{key}", _unknown(key, fields))
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name in skip:
            continue
        if name in raw:
            values[name] = _coerce(raw[name], hints[name], file, f"{prefix}{name}")
            _check_range(cls, name, values[name], file, f"{prefix}{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(file, f"{prefix}{name}", "missing required key")
    return values


def _unknown(key: str, known: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown key{hint}"


def _parse_env_value(raw: str, tp: Any) -> Any:
    """Env values are strings: read them as TOML values where the key is not a string."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if tp is str:
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        if origin is list or tp is list:
            return [int(x) if x.strip().isdigit() else x.strip() for x in raw.split(",")]
        return raw


def _env_overrides(doc: dict[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """Apply `CTRIPD_SECTION__KEY` variables to `doc`; returns key → the variable that set it.

    Each value is checked here, so that an error names the variable rather than the file."""
    sources: dict[str, str] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        cls = _SECTIONS.get(section)
        where = f"environment {name}"
        if cls is None:
            raise ConfigError(
                where, f"{section}", f"unknown section (known: {', '.join(_SECTIONS)})"
            )
        hints = typing.get_type_hints(cls)
        if key not in hints:
            raise ConfigError(where, f"{section}.{key}", _unknown(key, hints))
        if f"{section}.{key}" in _NESTED_KEYS:
            raise ConfigError(where, f"{section}.{key}", "set it in the config file's tables")
        parsed = _parse_env_value(value, hints[key])
        coerced = _coerce(parsed, hints[key], where, f"{section}.{key}")
        _check_range(cls, key, coerced, where, f"{section}.{key}")
        doc.setdefault(section, {})[key] = coerced
        sources[f"{section}.{key}"] = where
    return sources


def _check_address(value: str, file: str, key: str) -> str:
    if not is_hex_address(value):
        raise ConfigError(file, key, f"not an address: {value!r}")
    if not is_checksum_address(value):
        raise ConfigError(
            file, key, f"address is not checksummed (EIP-55): use {to_checksum_address(value)}"
        )
    return value


def _is_ws_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port out of range)
    except ValueError:
        return False
    return parts.scheme in ("ws", "wss") and bool(parts.hostname)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None


def _load_chains(path: Path) -> tuple[ChainConfig, ...]:
    file = str(path)
    text = _read(path)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "syntax"
        raise ConfigError(file, where, f"invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(doc, dict) or set(doc) != {"chains"}:
        raise ConfigError(file, "chains", "expected a top-level 'chains:' list")
    entries = doc["chains"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(file, "chains", "expected a non-empty list of chains")
    chains: list[ChainConfig] = []
    for i, entry in enumerate(entries):
        chains.append(_load_chain(entry, file, i))
    names: set[str] = set()
    ids: set[int] = set()
    for c in chains:
        if c.name in names:
            raise ConfigError(file, f"chains.{c.name}.name", "duplicate chain name")
        if c.chain_id in ids:
            raise ConfigError(file, f"chains.{c.name}.chain_id", f"duplicate chain id {c.chain_id}")
        names.add(c.name)
        ids.add(c.chain_id)
    return tuple(chains)


def _load_chain(entry: Any, file: str, index: int) -> ChainConfig:
    if not isinstance(entry, dict):
        raise ConfigError(file, f"chains[{index}]", "expected a mapping")
    label = entry.get("name") if isinstance(entry.get("name"), str) else f"[{index}]"
    prefix = f"chains.{label}."
    values = _build(ChainConfig, entry, file, prefix, skip={"native", "tokens"})
    if not values["name"] or not values["name"].replace("-", "").replace("_", "").isalnum():
        raise ConfigError(file, f"{prefix}name", "must be letters, digits, '-' or '_'")
    if not values["rpc"]:
        raise ConfigError(file, f"{prefix}rpc", "needs at least one RPC URL")
    for j, url in enumerate(values["rpc"]):
        if not url.startswith(("http://", "https://")):
            raise ConfigError(file, f"{prefix}rpc[{j}]", f"not an http(s) URL: {url!r}")
    if values.get("ws") is not None and not _is_ws_url(values["ws"]):
        raise ConfigError(file, f"{prefix}ws", f"not a ws(s) URL: {values['ws']!r}")
    values["treasury"] = _check_address(values["treasury"], file, f"{prefix}treasury")
    if values.get("sweep_mode", "auto") not in SWEEP_MODES:
        raise ConfigError(file, f"{prefix}sweep_mode", f"must be {_one_of(SWEEP_MODES)}")
    if values.get("sweep_delegate") is not None:
        values["sweep_delegate"] = _check_address(
            values["sweep_delegate"], file, f"{prefix}sweep_delegate"
        )

    native_raw = entry.get("native")
    if not isinstance(native_raw, dict):
        raise ConfigError(file, f"{prefix}native", "missing required mapping {symbol, decimals}")
    native = NativeAsset(**_build(NativeAsset, native_raw, file, f"{prefix}native.", set()))

    tokens_raw = entry.get("tokens") or {}
    if not isinstance(tokens_raw, dict):
        raise ConfigError(file, f"{prefix}tokens", "expected a mapping of symbol → token")
    tokens: dict[str, Token] = {}
    seen_addresses: set[str] = set()
    for symbol, raw in tokens_raw.items():
        tprefix = f"{prefix}tokens.{symbol}."
        if not isinstance(raw, dict):
            raise ConfigError(file, f"{prefix}tokens.{symbol}", "expected {address, decimals}")
        tvalues = _build(Token, {**raw, "symbol": symbol}, file, tprefix, set())
        tvalues["address"] = _check_address(tvalues["address"], file, f"{tprefix}address")
        if symbol == native.symbol:
            raise ConfigError(file, f"{prefix}tokens.{symbol}", "same symbol as the native asset")
        if tvalues["address"] in seen_addresses:
            raise ConfigError(file, f"{tprefix}address", "duplicate token address")
        seen_addresses.add(tvalues["address"])
        tokens[symbol] = Token(**tvalues)
    return ChainConfig(native=native, tokens=tokens, **values)


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate the TOML config, its env overrides, and the chains file it names."""
    env = os.environ if env is None else env
    path = Path(path)
    file = str(path)
    text = _read(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "", f"invalid TOML: {exc}") from None
    for section, body in doc.items():
        if section not in _SECTIONS:
            raise ConfigError(file, section, _unknown(section, _SECTIONS).replace("key", "section"))
        if not isinstance(body, dict):
            raise ConfigError(file, section, "expected a [section] table")
    sources = {f"{section}.{key}": file for section, body in doc.items() for key in body}
    sources |= _env_overrides(doc, env)
    raw_pairs = doc.get("rates", {}).pop("pairs", {})
    built: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        built[section] = cls(**_build(cls, doc.get(section, {}), file, f"{section}.", set()))

    daemon: DaemonConfig = built["daemon"]
    base = path.resolve().parent
    if "STATE_DIRECTORY" in env and "state_dir" not in doc.get("daemon", {}):
        daemon = dataclasses.replace(daemon, state_dir=env["STATE_DIRECTORY"].split(":")[0])
    daemon = dataclasses.replace(
        daemon,
        state_dir=str(base / daemon.state_dir),
        chains_file=str(base / daemon.chains_file),
    )
    built["daemon"] = daemon
    _validate(built, file, sources)
    chains = _load_chains(Path(daemon.chains_file))
    built["rates"] = dataclasses.replace(built["rates"], pairs=_load_pairs(raw_pairs, file, chains))
    return Config(path=file, chains=chains, **built)


def _load_pairs(raw: Any, file: str, chains: tuple[ChainConfig, ...]) -> tuple[RatePair, ...]:
    """The `[rates.pairs."ASSET/CURRENCY"]` tables: each asset's sources in one currency."""
    if not isinstance(raw, dict):
        raise ConfigError(file, "rates.pairs", 'expected tables [rates.pairs."ASSET/CURRENCY"]')
    pairs: list[RatePair] = []
    for name, body in raw.items():
        key = f'rates.pairs."{name}"'
        match = _PAIR_KEY.fullmatch(name)
        if match is None:
            raise ConfigError(file, key, "expected ASSET/CURRENCY, e.g. ETH/USD")
        if not isinstance(body, dict):
            raise ConfigError(file, key, "expected a table {sources, peg, min_sources}")
        values = _build(RatePair, body, file, f"{key}.", skip={"asset", "currency"})
        pair = RatePair(asset=match.group(1), currency=match.group(2), **values)
        for i, source in enumerate(pair.sources):
            problem = _source_problem(source, chains)
            if problem is not None:
                raise ConfigError(file, f"{key}.sources[{i}]", problem)
        if not pair.sources and not pair.peg:
            raise ConfigError(file, f"{key}.sources", "needs at least one source (or peg = true)")
        pairs.append(pair)
    return tuple(pairs)


def _source_problem(source: str, chains: tuple[ChainConfig, ...]) -> str | None:
    """What is wrong with a rate source's name, or None."""
    kind, _, rest = source.partition(":")
    if kind not in RATE_SOURCE_KINDS:
        return f"{source!r}: expected {', '.join(k + ':...' for k in RATE_SOURCE_KINDS)}"
    if kind != "feed":
        return None if _MARKET.fullmatch(rest) else f"{source!r}: expected {kind}:<market>"
    chain_name, _, address = rest.partition(":")
    if not any(c.name == chain_name for c in chains):
        return f"{source!r}: unknown chain {chain_name!r}"
    if not is_hex_address(address) or not is_checksum_address(address):
        return f"{source!r}: expected feed:<chain>:<checksummed aggregator address>"
    return None


def _validate(built: dict[str, Any], file: str, sources: Mapping[str, str]) -> None:
    """Rules across keys. `sources` maps each key the user set to the file or variable that set
    it, so an error names where to fix it."""

    def error(key: str, problem: str) -> ConfigError:
        return ConfigError(sources.get(key, file), key, problem)

    def ordered(low_key: str, high_key: str) -> None:
        """low ≤ high; blame the key the user set (the lower one if both or neither)."""
        section, low_name = low_key.split(".")
        high_name = high_key.split(".")[1]
        low, high = getattr(built[section], low_name), getattr(built[section], high_name)
        if low <= high:
            return
        if low_key in sources or high_key not in sources:
            raise error(low_key, f"must not be more than {high_key} ({high})")
        raise error(high_key, f"must not be less than {low_key} ({low})")

    wallet: WalletConfig = built["wallet"]
    if wallet.mnemonic_file and wallet.xpub:
        raise error("wallet.xpub", "set either mnemonic_file or xpub, not both")
    if not wallet.mnemonic_file and not wallet.xpub:
        raise error("wallet.mnemonic_file", "missing: set mnemonic_file or xpub")
    if wallet.gas_wallet not in GAS_WALLETS:
        raise error("wallet.gas_wallet", f"must be {_one_of(GAS_WALLETS)}")
    ordered("database.pool_min", "database.pool_max")
    ordered("payments.min_expiry", "payments.default_expiry")
    ordered("payments.default_expiry", "payments.max_expiry")
    webhooks: WebhooksConfig = built["webhooks"]
    if webhooks.url and not webhooks.url.startswith(("http://", "https://")):
        raise error("webhooks.url", f"not an http(s) URL: {webhooks.url!r}")
    if webhooks.url and not webhooks.secret_file:
        raise error("webhooks.secret_file", "required when webhooks.url is set")
    if not webhooks.retry_schedule:
        raise error("webhooks.retry_schedule", "must list at least one delay in seconds")
    payouts: PayoutsConfig = built["payouts"]
    if wallet.gas_wallet == "hardened" and payouts.wallet_index == wallet.gas_wallet_index:
        raise error("payouts.wallet_index", "must differ from wallet.gas_wallet_index")
    for i, item in enumerate(payouts.daily_limits):
        if not _DAILY_LIMIT.fullmatch(item):
            raise error(f"payouts.daily_limits[{i}]", f'expected "SYMBOL=amount", got {item!r}')
    rates: RatesConfig = built["rates"]
    for url_key in ("coinbase_url", "kraken_url"):
        if not getattr(rates, url_key).startswith(("http://", "https://")):
            raise error(f"rates.{url_key}", "not an http(s) URL")
    log: LogConfig = built["log"]
    if log.level.lower() not in LOG_LEVELS:
        raise error("log.level", f"must be {_one_of(LOG_LEVELS)}")
    if log.format not in LOG_FORMATS:
        raise error("log.format", f"must be {_one_of(LOG_FORMATS)}")


def resolve_secret_path(config_file: str, name: str, env: Mapping[str, str] | None = None) -> Path:
    """A bare file name is looked up in systemd's $CREDENTIALS_DIRECTORY when that is set;
    other relative paths are relative to the config file's directory."""
    env = os.environ if env is None else env
    path = Path(name)
    if path.is_absolute():
        return path
    creds = env.get("CREDENTIALS_DIRECTORY")
    if creds and len(path.parts) == 1:
        return Path(creds) / path
    return Path(config_file).resolve().parent / path


def read_secret(config_file: str, key: str, name: str, env: Mapping[str, str] | None = None) -> str:
    """Read a secret file; refuse files that group or others may read. Never echo the content."""
    path = resolve_secret_path(config_file, name, env)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(config_file, key, f"secret file not found: {path}") from None
    except PermissionError:
        raise ConfigError(config_file, key, f"secret file not readable: {path}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            config_file,
            key,
            f"secret file {path} is accessible by group/other "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}",
        )
    try:
        value = path.read_text().strip()
    except (PermissionError, UnicodeDecodeError):
        raise ConfigError(config_file, key, f"secret file not readable as text: {path}") from None
    if not value:
        raise ConfigError(config_file, key, f"secret file is empty: {path}")
    return value
