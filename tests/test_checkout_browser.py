"""The checkout page in headless Chromium (Debian's package, driven by Playwright): layout at phone
and desktop widths, the QR code as a camera would read it, live status without a reload, copy.

Screenshots go to test-artifacts/. Without Chromium these tests are skipped with the reason shown
(`make test` installs it where apt-get is usable).
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_checkout import Shop, open_shop
from test_scanner_support import ETH, cancel, mine, send_native

from ctripd.ledger import expiry

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="Playwright is not installed: pip install -e '.[dev]'"
)
zxingcpp = pytest.importorskip("zxingcpp", reason="zxing-cpp is not installed")
Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed")
expect = playwright_api.expect

CHROMIUM = os.environ.get("CTRIPD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = Path(CHROMIUM).is_file()
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PHONE = {"width": 390, "height": 844}
# Long enough for a poll (every 2.5 s) on a busy machine.
LIVE_TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    if not HAVE_CHROMIUM:
        pytest.skip(
            f"headless Chromium not found at {CHROMIUM}: install Debian's chromium "
            "(`make test` does so as root where apt-get works) or set CTRIPD_CHROMIUM"
        )
    async with playwright_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def shop(pool, write_config, make_client) -> Shop:  # type: ignore[no-untyped-def]
    return await open_shop(pool, write_config(), make_client)


class Tab:
    """A page of its own browser context, collecting console errors and failed requests."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url}"))


@pytest.fixture
async def open_tab(browser, shop) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
    """Open a payment's page in a browser context of its own; contexts close after the test."""
    contexts: list[Any] = []

    async def open_(payment_id: str, viewport: dict[str, int], **options: Any) -> Tab:
        ctx = await browser.new_context(viewport=viewport, device_scale_factor=1, **options)
        contexts.append(ctx)
        tab = Tab(await ctx.new_page())
        resp = await tab.page.goto(str(shop.client.make_url(f"/pay/{payment_id}")))
        assert resp.status == 200
        return tab

    yield open_
    for ctx in contexts:
        await ctx.close()


def screenshot_path(name: str) -> str:
    ARTIFACTS.mkdir(exist_ok=True)
    return str(ARTIFACTS / name)


def decode_qr(png: bytes) -> list[str]:
    image = Image.open(io.BytesIO(png)).convert("L")
    return [
        r.text for r in zxingcpp.read_barcodes(image) if r.format == zxingcpp.BarcodeFormat.QRCode
    ]


@pytest.mark.parametrize("width", [390, 1280])
async def test_address_and_qr_code_at_phone_and_desktop_widths(open_tab, shop, width) -> None:  # type: ignore[no-untyped-def]
    payment = await shop.create(amount="0.25")
    tab = await open_tab(payment["id"], {"width": width, "height": 900})
    page = tab.page

    address = page.locator("#address")
    await expect(address).to_be_visible()
    assert (await address.inner_text()).strip() == payment["address"]
    qr = page.locator("#qr svg")
    await expect(qr).to_be_visible()
    await expect(page.locator("h1")).to_have_text("0.25 ETH")
    await expect(page.locator(".state-pending h2")).to_have_text("Waiting for your payment")
    await expect(page.locator("#countdown")).to_have_text(re.compile(r"^(59:[0-5]\d|1:00:00)$"))
    for element in (address, qr, page.locator("#copy")):
        box = await element.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
    assert await page.evaluate("document.documentElement.scrollWidth") <= width, "no side scroll"

    assert decode_qr(await qr.screenshot()) == [payment["payment_uri"]]
    await page.screenshot(path=screenshot_path(f"checkout-{width}px-pending.png"), full_page=True)
    assert tab.errors == [], "no script error and no CSP violation"


async def test_status_turns_confirmed_without_a_reload(open_tab, shop, anvil) -> None:  # type: ignore[no-untyped-def]
    await shop.watcher.run_once()  # the cursor starts at the current head
    payment = await shop.create(amount="1")
    tab = await open_tab(payment["id"], PHONE)
    page = tab.page
    await page.evaluate("window.sameDocument = true")

    send_native(anvil, payment["address"], ETH)
    await shop.watcher.run_once()
    detected = page.locator(".state-detected")
    await expect(detected).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    await expect(detected).to_contain_text("Waiting for confirmations: 1 of 2.")
    await expect(page.locator(".pay")).to_be_hidden()
    await page.screenshot(path=screenshot_path("checkout-390px-detected.png"), full_page=True)

    mine(anvil)
    await shop.watcher.run_once()
    await expect(page.locator(".state-confirmed")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    await expect(page.locator(".state-confirmed h2")).to_have_text("Payment confirmed")
    await expect(detected).to_be_hidden()
    assert await page.evaluate("window.sameDocument") is True, "the page was not reloaded"
    await page.screenshot(path=screenshot_path("checkout-390px-confirmed.png"), full_page=True)
    assert tab.errors == []


async def test_canceled_and_expired_payments_stop_showing_the_address(  # type: ignore[no-untyped-def]
    open_tab, shop, pool
) -> None:
    canceled = await shop.create()
    expired = await shop.create()
    tabs = [await open_tab(p["id"], PHONE) for p in (canceled, expired)]
    for tab in tabs:
        await expect(tab.page.locator(".pay")).to_be_visible()

    resp = await cancel(shop.client, canceled["id"], shop.key)
    assert resp.status == 200
    await pool.execute(
        "UPDATE payments SET expires_at = now() - interval '1 second' WHERE id = $1", expired["id"]
    )
    await shop.watcher.run_once()  # expiry waits for the scanner to catch up
    assert await expiry.run_once(pool, operator_url=True) == 1

    for tab, state in zip(tabs, ("canceled", "expired"), strict=True):
        page = tab.page
        await expect(page.locator(f".state-{state}")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
        await expect(page.locator(".pay")).to_be_hidden()
        await expect(page.locator(f".state-{state}")).to_contain_text("Do not send anything")
        await page.screenshot(path=screenshot_path(f"checkout-390px-{state}.png"), full_page=True)
        assert tab.errors == []


async def test_copy_button_puts_the_address_on_the_clipboard(open_tab, shop) -> None:  # type: ignore[no-untyped-def]
    payment = await shop.create()
    tab = await open_tab(payment["id"], PHONE, permissions=["clipboard-read", "clipboard-write"])
    page = tab.page
    await page.evaluate("navigator.clipboard.writeText('something else')")
    await page.locator("#copy").click()
    await expect(page.locator("#copy")).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == payment["address"]

    # Without the async clipboard API (plain http on a LAN address), the fallback copies too.
    await page.evaluate("navigator.clipboard.writeText('something else')")
    fallback = await page.context.new_page()
    await fallback.add_init_script("Object.defineProperty(navigator, 'clipboard', {value: null})")
    await fallback.goto(page.url)
    await fallback.locator("#copy").click()
    await expect(fallback.locator("#copy")).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == payment["address"]
    assert tab.errors == []
