"""Real Chromium (Debian's package) driven by Playwright against Django's live server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import missing_service

CHROMIUM = Path(os.environ.get("DAGWRIGHT_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        missing_service(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests make
    # between page actions are still synchronous.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield chromium
        chromium.close()


def sign_in(browser, live_server, user, timeout_ms: int = 15_000):
    """A new browser context and its page, signed in as ``user`` through the login form."""
    from tests.factories import PASSWORD

    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return context, page


@pytest.fixture
def signed_in_page(browser, live_server, operator):
    """A page signed in as the operator."""
    context, page = sign_in(browser, live_server, operator)
    page.wait_for_url(f"{live_server.url}/runs/")
    yield page
    context.close()
