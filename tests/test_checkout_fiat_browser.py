"""The checkout page of a payment priced in fiat in headless Chromium, at phone and desktop
widths: the price, a choice per option (the unquoted one unavailable), the chosen option's QR
code (as a camera reads it), amount and the address; what is left to send, live.

Screenshots go to test-artifacts/; skipped without Chromium, as test_checkout_browser.py."""

from __future__ import annotations

import re

import pytest
from test_checkout_browser import (  # noqa: F401  (fixtures)
    LIVE_TIMEOUT_MS,
    PHONE,
    browser,
    decode_qr,
    expect,
    open_tab,
    screenshot_path,
)
from test_checkout_fiat import FiatShop, coinbase, open_fiat_shop  # noqa: F401  (fixture)
from test_scanner_support import SENDER

from ctripd.dev import tokens as devtokens


@pytest.fixture
async def fiat(pool, write_config, make_client, anvil, coinbase) -> FiatShop:  # type: ignore[no-untyped-def]  # noqa: F811
    return await open_fiat_shop(pool, write_config, make_client, anvil, coinbase)


@pytest.fixture
def shop(fiat: FiatShop):  # type: ignore[no-untyped-def]
    """The shop `open_tab` opens pages of."""
    return fiat.shop


@pytest.mark.parametrize("width", [390, 1280])
async def test_pick_an_option_then_pay_it(open_tab, fiat: FiatShop, width: int) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    payment = await fiat.create()
    td6, usdtl, _ = payment["options"]
    tab = await open_tab(payment["id"], {"width": width, "height": 900})
    page = tab.page

    await expect(page.locator("h1")).to_have_text("25.00 USD")
    await expect(page.locator(".countdown .running")).to_have_text(
        re.compile(r"^Rates locked for (59:[0-5]\d|1:00:00)$")
    )
    choices = page.locator("label.choice")
    await expect(choices).to_have_text(
        [
            "25 TD6 on anvil",
            "25 USDTL on anvil",
            re.compile(r"ETH\s+on anvil\s*unavailable: no exchange rate now"),
        ]
    )
    # Nothing to send to before an option is chosen; the unquoted one cannot be chosen.
    await expect(page.locator("#address")).to_be_hidden()
    await expect(page.locator(".panel")).to_have_count(2)
    for panel in await page.locator(".panel").all():
        await expect(panel).to_be_hidden()
    await expect(page.locator("#option-2")).to_be_disabled()
    await page.screenshot(
        path=screenshot_path(f"checkout-fiat-{width}px-choose.png"), full_page=True
    )

    for i, option in ((0, td6), (1, usdtl)):
        await choices.nth(i).click()
        panel = page.locator(f"#panel-{i}")
        await expect(panel).to_be_visible()
        await expect(page.locator(f"#panel-{1 - i}")).to_be_hidden()
        await expect(panel.locator("p.label")).to_have_text(
            f"Send exactly {option['amount']} {option['asset']} on anvil (chain id 31337) to the"
            " address below."
        )
        address = page.locator("#address")
        await expect(address).to_be_visible()
        assert (await address.inner_text()).strip() == payment["address"]
        qr = panel.locator("svg")
        await expect(qr).to_be_visible()
        assert decode_qr(await qr.screenshot()) == [option["payment_uri"]]
        for element in (address, qr, page.locator("#copy"), choices.nth(i)):
            box = await element.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
        assert await page.evaluate("document.documentElement.scrollWidth") <= width
    await page.screenshot(
        path=screenshot_path(f"checkout-fiat-{width}px-chosen.png"), full_page=True
    )
    assert tab.errors == [], "no script error and no CSP violation"


async def test_what_is_left_to_send_follows_the_payment(open_tab, fiat: FiatShop, anvil) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    shop = fiat.shop
    await shop.watcher.run_once()  # the cursor starts at the current head
    payment = await fiat.create()
    tab = await open_tab(payment["id"], PHONE)
    page = tab.page
    await page.evaluate("window.sameDocument = true")
    await page.locator("label.choice").nth(1).click()

    devtokens.token_transfer(anvil.url, fiat.tokens["TD6"], SENDER, payment["address"], 10**7)
    await shop.watcher.run_once()
    pending = page.locator(".state-pending")
    await expect(pending.locator(".partial-only")).to_have_text(
        re.compile(r"Received 10.00 USD\s+so far. Send the remaining 15.00 USD."),
        timeout=LIVE_TIMEOUT_MS,
    )
    await expect(page.locator("#panel-1 .partial-only")).to_have_text(
        "Still to send in USDTL: 15 USDTL"
    )
    await page.screenshot(path=screenshot_path("checkout-fiat-390px-partial.png"), full_page=True)

    devtokens.token_transfer(
        anvil.url, fiat.tokens["USDTL"], SENDER, payment["address"], 15 * 10**6
    )
    await shop.watcher.run_once()
    await expect(page.locator(".state-detected")).to_contain_text(
        "Waiting for confirmations: 1 of 2.", timeout=LIVE_TIMEOUT_MS
    )
    await expect(page.locator(".pay")).to_be_hidden()
    assert await page.evaluate("window.sameDocument") is True, "the page was not reloaded"
    assert tab.errors == []
