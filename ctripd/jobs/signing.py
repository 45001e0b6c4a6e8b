"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.

See https://www.standardwebhooks.com. Secrets are `whsec_<base64>`; during a rotation the previous
secret signs too, so receivers can switch over without dropping a delivery.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from ctripd.config import Config, ConfigError, read_secret

PREFIX = "whsec_"
# The spec asks for secrets of 24 to 64 random bytes.
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64


def parse_secret(value: str) -> bytes:
    """The key bytes of a `whsec_<base64>` secret. Errors never quote the value."""
    if not value.startswith(PREFIX):
        raise ValueError(f"must start with '{PREFIX}' followed by base64")
    try:
        key = base64.b64decode(value[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"is not valid base64 after '{PREFIX}'") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"must decode to {MIN_KEY_BYTES}..{MAX_KEY_BYTES} bytes, got {len(key)}")
    return key


def generate_secret(nbytes: int = 32) -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(nbytes)).decode()


class Signer:
    """Signs with the current key first, then the previous one if a rotation is under way."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one key is needed")
        self._keys = list(keys)

    def __repr__(self) -> str:
        return f"Signer(keys={len(self._keys)})"

    @classmethod
    def from_config(cls, config: Config) -> Signer:
        """Read `webhooks.secret_file` (and `previous_secret_file`) with the usual file checks."""
        wh = config.webhooks
        if wh.previous_secret_file and not wh.secret_file:
            raise ConfigError(
                config.path, "webhooks.secret_file", "required with previous_secret_file"
            )
        keys = []
        for key, name in (
            ("webhooks.secret_file", wh.secret_file),
            ("webhooks.previous_secret_file", wh.previous_secret_file),
        ):
            if not name:
                continue
            try:
                keys.append(parse_secret(read_secret(config.path, key, name)))
            except ValueError as exc:
                raise ConfigError(config.path, key, f"secret in {name} {exc}") from None
        if not keys:
            raise ConfigError(config.path, "webhooks.secret_file", "required to sign webhooks")
        return cls(keys)

    def signature(self, msg_id: str, timestamp: int, body: bytes) -> str:
        """The `webhook-signature` header value: space-separated `v1,<base64>` entries."""
        signed = b"%s.%d.%s" % (msg_id.encode(), timestamp, body)
        return " ".join(
            "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
            for key in self._keys
        )

    def headers(self, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self.signature(msg_id, timestamp, body),
        }
