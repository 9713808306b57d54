"""Real Chromium (Debian's package) driven by Playwright against Django's live server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import WorkerProcess, missing_service, worker_environment
from tests.providers.held import HeldChatServer

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


# Pages run under a Content-Security-Policy without 'unsafe-eval': Playwright evaluates a string
# predicate of ``wait_for_function`` with eval, refused there, so predicates are arrow functions.


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


# Every XMLHttpRequest a page makes (htmx's polls and partials), logged in the page itself as
# ``window.__xhr``: read there, the log cannot race the browser's events on their way to this process.
LOG_REQUESTS = """(() => {
  window.__xhr = {sent: [], done: []};
  const open = XMLHttpRequest.prototype.open, send = XMLHttpRequest.prototype.send;
  XMLHttpRequest.prototype.open = function (method, url) { this.__url = String(url); return open.apply(this, arguments); };
  XMLHttpRequest.prototype.send = function () {
    window.__xhr.sent.push(this.__url);
    this.addEventListener("loadend", () => window.__xhr.done.push([this.__url, this.status]));
    return send.apply(this, arguments);
  };
})();"""


def log_requests(page) -> None:
    """Log the requests of every document the page loads from now on (``requests_sent``)."""
    page.add_init_script(LOG_REQUESTS)


def requests_sent(page) -> list[str]:
    return page.evaluate("window.__xhr.sent.slice()")


@pytest.fixture
def signed_in_page(browser, live_server, operator):
    """A page signed in as the operator."""
    context, page = sign_in(browser, live_server, operator)
    page.wait_for_url(f"{live_server.url}/runs/")
    yield page
    context.close()


@pytest.fixture
def held_model(test_database_url: str, test_queue: str) -> Iterator[HeldChatServer]:
    """Models ``held-*`` whose calls the test releases (tests.providers.held), served to a worker
    of this test's own: the runs this test starts go to that worker's queue, so a node of theirs
    is running for exactly as long as the test holds its call."""
    from orchestrator_site.celery import app

    queue = f"{test_queue}-held-{uuid.uuid4().hex[:6]}"
    with HeldChatServer() as server:
        worker = WorkerProcess(queue, worker_environment(test_database_url, queue, DAGWRIGHT_PROVIDERS=server.providers()), concurrency=4, pool="threads")
        worker.start()
        app.conf.task_default_queue = queue
        try:
            yield server
        finally:
            app.conf.task_default_queue = test_queue
            server.release_all()  # a call still held would keep the worker from stopping warm
            worker.stop()
            with app.connection_for_write() as conn:
                conn.default_channel.queue_purge(queue)
