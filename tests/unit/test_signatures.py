"""The Standard Webhooks signer, checked against the spec's example and the reference package."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from ctripd.jobs.signing import Signer, generate_secret, parse_secret

# The example of the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_spec_example() -> None:
    signer = Signer([parse_secret(SPEC_SECRET)])
    assert signer.signature(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_reference_implementation_verifies_our_headers() -> None:
    secret = generate_secret()
    body = '{"id": "evt_1", "data": {"note": "ünïcode"}}'.encode()
    headers = Signer([parse_secret(secret)]).headers("evt_1", int(time.time()), body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert Webhook(secret).verify(body, headers)["id"] == "evt_1"
    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(secret).verify(body + b" ", headers)


def test_two_keys_sign_in_order() -> None:
    new, old = generate_secret(), generate_secret()
    signer = Signer([parse_secret(new), parse_secret(old)])
    value = signer.signature("evt_1", 1, b"{}")
    first, second = value.split(" ")
    assert first == Signer([parse_secret(new)]).signature("evt_1", 1, b"{}")
    assert second == Signer([parse_secret(old)]).signature("evt_1", 1, b"{}")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with 'whsec_'"),
        ("whsec_not base64!", "is not valid base64"),
        ("whsec_" + base64.b64encode(b"x" * 16).decode(), "got 16"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "got 65"),
    ],
)
def test_bad_secrets_are_refused_without_echo(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as error:
        parse_secret(value)
    assert value.removeprefix("whsec_") not in str(error.value)
