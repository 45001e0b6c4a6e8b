"""The Standard Webhooks signer, checked against the spec's example and the reference package."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctripd.config import ConfigError
from ctripd.jobs.signing import Signer, generate_secret

# The example of the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_from_config_reads_both_files_and_checks_them(write_config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    current, previous = tmp_path / "current", tmp_path / "previous"
    current.write_text(SPEC_SECRET + "\n")
    previous.write_text(generate_secret())
    current.chmod(0o600)
    previous.chmod(0o600)
    section = {
        "url": "http://127.0.0.1:9/hook",
        "secret_file": str(current),
        "previous_secret_file": str(previous),
    }
    signer = Signer.from_config(write_config(toml={"webhooks": section}))
    assert signer.signature(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY).startswith(SPEC_SIGNATURE + " ")
    assert repr(signer) == "Signer(keys=2)"

    previous.chmod(0o640)
    with pytest.raises(ConfigError, match=r"previous_secret_file: .*chmod 600"):
        Signer.from_config(write_config(toml={"webhooks": section}))
    previous.chmod(0o600)
    previous.write_text("not-a-secret")
    with pytest.raises(ConfigError, match=r"previous_secret_file: secret in .* must start") as err:
        Signer.from_config(write_config(toml={"webhooks": section}))
    assert "not-a-secret" not in str(err.value)
    del section["secret_file"], section["url"]
    with pytest.raises(ConfigError, match="secret_file: required with previous_secret_file"):
        Signer.from_config(write_config(toml={"webhooks": section}))
