"""Drafts and the published pointer: saving never publishes unless asked, publishing moves the
pointer (an older version: a rollback), a stale expected version is refused, concurrent
publishes serialise, runs pin their version, and every change is in the verifying audit chain."""

from __future__ import annotations

import json
import threading
from io import StringIO

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from apps.audit.audit import audit_verify, entry_hash
from apps.audit.models import AuditEntry
from apps.runs.services import run_start
from apps.workflows.models import Workflow, WorkflowNotPublished, WorkflowVersion
from apps.workflows.selectors import version_get, version_latest, workflow_get
from apps.workflows.services import NOTHING_PUBLISHED, PublishConflict, workflow_publish, workflow_save
from tests.conftest import require_database
from tests.factories import definition, llm_node

pytestmark = pytest.mark.django_db


def v(number: int):
    """The ``tiny`` workflow's definition number ``number``: each prompt differs."""
    return definition("tiny", [llm_node("answer", f"Version {number} on {{{{ input.topic }}}}.")])


def published(name: str = "tiny") -> int | None:
    workflow = Workflow.objects.select_related("published_version").get(name=name)
    return workflow.published_version.number if workflow.published_version else None


def workflow_events(name: str = "tiny") -> list[tuple[str, str, dict | None, dict | None]]:
    return [(e.event, e.actor, e.before, e.after) for e in AuditEntry.objects.filter(workflow_name=name).order_by("seq")]


def test_a_save_is_a_draft_unless_published(admin):
    draft, created = workflow_save(spec=v(1), user=admin)

    assert (created, draft.number, published()) == (True, 1, None)
    with pytest.raises(WorkflowNotPublished, match="has no published version"):
        run_start(workflow=draft.workflow, input={"topic": "tides"})

    workflow_save(spec=v(2), user=admin, publish=True)

    assert published() == 2
    workflow = workflow_get(name="tiny")
    assert (workflow.published_by, workflow.published_at is not None) == (admin, True)


def test_saving_does_not_move_the_pointer(admin):
    workflow_save(spec=v(1), user=admin, publish=True)
    second, _ = workflow_save(spec=v(2), user=admin)

    assert published() == 1
    assert version_latest(workflow=second.workflow) == second
    assert version_get(workflow=workflow_get(name="tiny")).number == 1


def test_saving_an_older_definition_reuses_it_and_publishing_it_is_the_rollback(admin):
    workflow_save(spec=v(1), user=admin, publish=True)
    workflow_save(spec=v(2), user=admin, publish=True)

    again, created = workflow_save(spec=v(1), user=admin)
    assert (again.number, created, published()) == (1, False, 2)  # the old bug: "latest" stayed v2 with no way back

    workflow_save(spec=v(1), user=admin, publish=True)

    assert published() == 1
    assert WorkflowVersion.objects.filter(workflow__name="tiny").count() == 2


def test_publish_and_rollback_by_number(admin):
    workflow_save(spec=v(1), user=admin, publish=True)
    workflow_save(spec=v(2), user=admin)
    workflow = workflow_get(name="tiny")

    workflow_publish(workflow=workflow, version_number=2, user=admin)
    assert published() == 2
    workflow_publish(workflow=workflow, version_number=1, user=admin, expected_published=2)
    assert published() == 1
    with pytest.raises(WorkflowVersion.DoesNotExist):
        workflow_publish(workflow=workflow, version_number=9, user=admin)


def test_a_stale_expected_version_is_refused_saying_who_published_what_and_when(admin, operator):
    workflow_save(spec=v(1), user=admin, publish=True)
    workflow_save(spec=v(2), user=admin, publish=True, expected_published=1)
    workflow = workflow_get(name="tiny")

    with pytest.raises(PublishConflict) as caught:
        workflow_publish(workflow=workflow, version_number=1, user=admin, expected_published=1)
    with pytest.raises(PublishConflict):
        workflow_save(spec=v(3), user=admin, publish=True, expected_published=1)
    with pytest.raises(PublishConflict):
        workflow_save(spec=v(4), user=admin, expected_published=NOTHING_PUBLISHED)  # a save checks too

    conflict = caught.value
    assert (conflict.published, conflict.published_by, conflict.expected) == (2, admin.username, 1)
    assert str(conflict).startswith(f"workflow 'tiny': version 2 is published by {admin.username} at {workflow_get(name='tiny').published_at.isoformat()}")
    assert str(conflict).endswith("not version 1 as expected")
    assert published() == 2
    assert WorkflowVersion.objects.filter(workflow__name="tiny").count() == 2  # nothing written by the refused saves


def test_a_new_workflow_expected_with_nothing_published(admin):
    workflow_save(spec=v(1), user=admin, publish=True, expected_published=NOTHING_PUBLISHED)
    assert published() == 1


def test_a_run_keeps_the_version_it_pinned_whatever_is_published_later(admin):
    first, _ = workflow_save(spec=v(1), user=admin, publish=True)
    early = run_start(workflow=first.workflow, input={"topic": "tides"})
    workflow_save(spec=v(2), user=admin, publish=True)
    late = run_start(workflow=workflow_get(name="tiny"), input={"topic": "tides"})
    workflow_publish(workflow=workflow_get(name="tiny"), version_number=1, user=admin)
    after_rollback = run_start(workflow=workflow_get(name="tiny"), input={"topic": "tides"})
    named = run_start(workflow=workflow_get(name="tiny"), input={"topic": "tides"}, version_number=2)

    early.refresh_from_db()
    assert [r.version.number for r in (early, late, after_rollback, named)] == [1, 2, 1, 2]


def test_save_publish_and_rollback_are_chained_in_the_audit_trail(admin):
    workflow_save(spec=v(1), user=admin, publish=True)
    second, _ = workflow_save(spec=v(2), user=admin)
    workflow_save(spec=v(2), user=admin)  # unchanged: nothing to record
    workflow_publish(workflow=workflow_get(name="tiny"), version_number=2, user=admin)
    workflow_publish(workflow=workflow_get(name="tiny"), version_number=2, user=admin)  # already published: nothing
    workflow_publish(workflow=workflow_get(name="tiny"), version_number=1, user=admin)

    first_hash = WorkflowVersion.objects.get(workflow__name="tiny", number=1).content_hash
    assert workflow_events() == [
        ("saved", admin.username, None, {"version": 1, "content_hash": first_hash}),
        ("published", admin.username, None, {"version": 1, "content_hash": first_hash}),
        ("saved", admin.username, None, {"version": 2, "content_hash": second.content_hash}),
        ("published", admin.username, {"version": 1}, {"version": 2, "content_hash": second.content_hash}),
        ("rolled_back", admin.username, {"version": 2}, {"version": 1, "content_hash": first_hash}),
    ]
    report = audit_verify()
    assert (report.ok, report.entries) == (True, 5)


def test_a_draft_published_over_a_newer_version_is_a_publish_not_a_rollback(admin):
    workflow_save(spec=v(1), user=admin, publish=True)
    workflow_save(spec=v(2), user=admin)  # an admin's draft, saved before ...
    workflow_save(spec=v(3), user=admin, publish=True)  # ... a colleague published version 3
    workflow_publish(workflow=workflow_get(name="tiny"), version_number=2, user=admin)  # never published before
    workflow_publish(workflow=workflow_get(name="tiny"), version_number=1, user=admin)  # published before: back to it

    moves = [(event, before, after["version"]) for event, _, before, after in workflow_events() if event != "saved"]
    assert moves == [("published", None, 1), ("published", {"version": 1}, 3), ("published", {"version": 3}, 2), ("rolled_back", {"version": 2}, 1)]


def test_a_workflow_name_is_hashed_so_changing_it_breaks_the_chain(admin):
    workflow_save(spec=v(1), user=admin, publish=True)
    entry = AuditEntry.objects.get(event="published")
    entry.workflow_name = "other"

    assert entry_hash(entry) != entry.hash


def test_a_refused_publish_records_nothing(admin):
    workflow_save(spec=v(1), user=admin, publish=True)
    with pytest.raises(PublishConflict):
        workflow_publish(workflow=workflow_get(name="tiny"), version_number=1, user=admin, expected_published=NOTHING_PUBLISHED)
    assert [e[0] for e in workflow_events()] == ["saved", "published"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_publishes_with_the_same_expected_version_exactly_one_wins(admin):
    require_database("postgresql", "SQLite serialises every writer: the row lock is PostgreSQL's to prove")
    workflow_save(spec=v(1), user=admin, publish=True)
    for n in range(2, 7):
        workflow_save(spec=v(n), user=admin)
    contenders = [2, 3, 4, 5, 6]
    barrier = threading.Barrier(len(contenders))
    won: list[int] = []
    refused: list[int] = []
    failures: list[BaseException] = []

    def publish(number: int) -> None:
        try:
            workflow = workflow_get(name="tiny")
            barrier.wait()
            workflow_publish(workflow=workflow, version_number=number, user=admin, expected_published=1)
            won.append(number)
        except PublishConflict:
            refused.append(number)
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=publish, args=(n,)) for n in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert len(won) == 1
    assert sorted(won + refused) == contenders
    assert published() == won[0]
    assert [e[0] for e in workflow_events()].count("published") == 2  # v1, then the winner only
    assert audit_verify().ok


def test_workflow_load_saves_files_as_drafts_or_published(tmp_path, admin):
    first, second, bad = tmp_path / "one.yaml", tmp_path / "two.json", tmp_path / "bad.yaml"
    first.write_text(yaml.safe_dump(v(1)))
    second.write_text(json.dumps(v(2)))
    bad.write_text("name: tiny\nnodes: []\n")
    out = StringIO()

    call_command("workflow_load", str(first), stdout=out)
    call_command("workflow_load", str(second), "--publish", "--user", admin.username, stdout=out)

    assert out.getvalue().splitlines() == ["tiny v1 created", "tiny v2 created, published"]
    assert (published(), workflow_get(name="tiny").published_by) == (2, admin)
    with pytest.raises(CommandError, match="bad.yaml: /nodes: a workflow needs at least one node"):
        call_command("workflow_load", str(bad), stdout=out)
    with pytest.raises(CommandError, match="missing.yaml"):
        call_command("workflow_load", str(tmp_path / "missing.yaml"), stdout=out)


def test_the_exports_and_the_chain_check_cover_one_workflows_changes(admin, client):
    workflow_save(spec=v(1), user=admin, publish=True)
    workflow_save(spec=definition("other"), user=admin, publish=True)
    client.force_login(admin)

    rows = json.loads(b"".join(client.get(reverse("audit:audit-json"), {"workflow": "tiny"}).streaming_content))
    verdict = StringIO()
    call_command("verify_audit_chain", stdout=verdict)

    assert [(r["event"], r["workflow"]) for r in rows] == [("saved", "tiny"), ("published", "tiny")]
    assert client.get(reverse("audit:audit-json"), {"workflow": "Not A Name!"}).status_code == 400
    assert verdict.getvalue() == "4 entries, chain intact\n"
