"""Console logs (a terminal, or `[log] format = "console"`) show plain tracebacks: no frame's
locals, which would put request headers and secrets into the log."""

from __future__ import annotations

import pytest
import structlog

from ctripd.log import configure_logging


def test_console_tracebacks_show_no_locals(capsys: pytest.CaptureFixture[str]) -> None:
    saved = structlog.get_config()
    try:
        configure_logging("info", "console")

        def handle(authorization: str) -> None:
            raise ValueError("boom")

        secret = "ctk_" + "S3CR3T" * 4  # built at run time: the source lines show no value
        try:
            handle("Bearer " + secret)
        except ValueError:
            structlog.get_logger("test").exception("request.failed")
        out = capsys.readouterr().out
        assert "ValueError: boom" in out and "request.failed" in out
        assert secret not in out
    finally:
        structlog.configure(**saved)
