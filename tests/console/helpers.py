"""Runs for the page tests.

Runs are started with the real ``run_start``; no worker runs in these tests, so their first
nodes stay queued and tests move them along by updating rows, as a worker would.
"""

from __future__ import annotations

from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

from django.test import Client
from django.utils import timezone

from apps.runs.models import NodeRun, NodeStatus, Run, RunStatus
from apps.runs.services import run_start
from apps.workflows.models import WorkflowVersion


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def start(version: WorkflowVersion, user: Any = None, topic: str = "tides") -> Run:
    return run_start(workflow=version.workflow, input={"topic": topic}, started_by=user)


def finish(run: Run, status: str = RunStatus.SUCCEEDED, **node_fields: Any) -> Run:
    """Mark the run and all its nodes finished, as a worker would have left them."""
    now = timezone.now()
    node_status = NodeStatus.SUCCEEDED if status == RunStatus.SUCCEEDED else NodeStatus.FAILED
    NodeRun.objects.filter(run=run).update(status=node_status, attempt=1, started_at=now, finished_at=now, **node_fields)
    Run.objects.filter(pk=run.pk).update(status=status, started_at=run.started_at or now, finished_at=now)
    run.refresh_from_db()
    return run


# --- reading pages as elements, not as text ------------------------------------------------------

VOID_ELEMENTS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"})


class Element:
    """One element of a page parsed with the standard library's ``html.parser``: enough to say
    *where* a text is (this badge, that cell), which ``"running" in html`` cannot."""

    def __init__(self, tag: str, attrs: dict[str, str], parent: Element | None = None):
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Element | str] = []

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    @property
    def text(self) -> str:
        """The element's text, whitespace collapsed."""
        return " ".join("".join(self._strings(hidden=True)).split())

    @property
    def label(self) -> str:
        """The text a screen reader reads: without the parts marked ``aria-hidden``, whitespace collapsed."""
        return " ".join("".join(self._strings(hidden=False)).split())

    def _strings(self, hidden: bool) -> Iterator[str]:
        for child in self.children:
            if isinstance(child, str):
                yield child
            elif hidden or child.attrs.get("aria-hidden") != "true":
                yield from child._strings(hidden)

    def elements(self) -> list[Element]:
        """The child elements, in order."""
        return [child for child in self.children if isinstance(child, Element)]

    def all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Element]:
        """Every element below this one, in document order, with this tag, class and attributes
        (``hx_get="..."`` for ``hx-get``)."""
        wanted = {name.replace("_", "-"): value for name, value in attrs.items()}
        found = []
        for child in self.elements():
            if (tag is None or child.tag == tag) and (cls is None or cls in child.classes) and all(child.attrs.get(k) == v for k, v in wanted.items()):
                found.append(child)
            found.extend(child.all(tag, cls, **attrs))
        return found

    def one(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Element:
        """The only element below this one that matches; fails when there are none or several."""
        found = self.all(tag, cls, **attrs)
        assert len(found) == 1, f"{len(found)} elements match {tag or '*'} class={cls} {attrs} in <{self.tag} {self.attrs}>"
        return found[0]

    def __repr__(self) -> str:
        return f"<{self.tag} {self.attrs}>{self.text[:80]}"


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = self.current = Element("#document", {})

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs}, self.current)
        self.current.children.append(element)
        if tag not in VOID_ELEMENTS:
            self.current = element

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.children.append(Element(tag, {name: value or "" for name, value in attrs}, self.current))

    def handle_endtag(self, tag: str) -> None:
        open_element: Element | None = self.current
        while open_element is not None and open_element.tag != tag:
            open_element = open_element.parent
        if open_element is not None and open_element.parent is not None:  # an end tag with no start is ignored
            self.current = open_element.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def parse_html(html: str | bytes) -> Element:
    """The page (or partial) as a tree of elements; its root is a document node."""
    builder = _TreeBuilder()
    builder.feed(html.decode() if isinstance(html, bytes) else html)
    builder.close()
    return builder.root


def facts(section: Element) -> dict[str, Element]:
    """A ``<dl>``'s definitions by their term: ``facts(summary)["Status"]`` is the status's ``<dd>``."""
    return {dt.text: dd for dl in section.all("dl") for dt, dd in zip(dl.all("dt"), dl.all("dd"), strict=True)}


def table_cell(table: Element, row: Element, column: str) -> Element:
    """The cell of ``row`` under the column headed ``column`` in ``table``'s head."""
    headings = [th.text for th in table.one("thead").all("th")]
    return [cell for cell in row.elements() if cell.tag in ("th", "td")][headings.index(column)]
