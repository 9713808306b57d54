"""The start-a-run page: a form generated from the input schema, or raw JSON, through run_start."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.urls import reverse
from django.utils.html import escape

from apps.runs.models import Run
from tests.factories import definition, save_workflow


def start_url(version) -> str:
    return reverse("console:run_start", args=[version.workflow.name])


def form_data(**fields: str) -> dict[str, str]:
    return {"mode": "form", "submission": str(uuid.uuid4()), **{f"input-{name}": value for name, value in fields.items()}}


def control(html: str, name: str) -> str:
    """The opening tag of the form control called ``name``."""
    match = re.search(rf'<(input|select|textarea)[^>]*\bname="{re.escape(name)}"[^>]*>', html)
    assert match, f"no control named {name}"
    return match.group(0)


def errors_of(html: str, name: str) -> str:
    """The error list printed next to the field called ``name`` ('' when it has none)."""
    start = html.find(f'id="id_{name}-errors"')
    return "" if start < 0 else html[start : html.index("</ul>", start)]


def test_the_form_has_a_control_per_schema_property(form_version, operator_client):
    html = operator_client.get(start_url(form_version)).content.decode()

    assert control(html, "input-title").startswith('<input type="text"')
    assert 'maxlength="80"' in control(html, "input-title")
    assert control(html, "input-body").startswith("<textarea")  # no maxLength: room to write
    assert control(html, "input-tone").startswith("<select")
    assert '<option value="&quot;friendly&quot;">friendly</option>' in html
    words = control(html, "input-words")
    assert words.startswith('<input type="number"')
    assert all(attr in words for attr in ('value="100"', 'min="10"', 'max="500"', 'step="1"'))
    assert 'step="any"' in control(html, "input-temperature")
    assert control(html, "input-urgent").startswith('<input type="checkbox"')
    assert control(html, "input-tags").startswith("<textarea")
    assert html.count('title="required"') == 3  # title, body and tone are marked
    assert "Shown on the brief." in html
    assert control(html, "input_json").startswith("<textarea")  # the raw JSON alternative


def test_a_filled_form_starts_the_run_and_opens_its_page(form_version, operator_client, operator):
    data = form_data(title="Tides", body="The moon pulls the sea.", tone='"formal"', words="120", temperature="0.5", urgent="on", tags='["sea"]')

    response = operator_client.post(start_url(form_version), data)

    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("console:run", args=[run.id])
    expected = {"title": "Tides", "body": "The moon pulls the sea.", "tone": "formal", "words": 120, "temperature": 0.5, "urgent": True}
    assert run.input == {**expected, "tags": ["sea"]}
    assert run.started_by == operator
    assert run.version == form_version


def test_blank_optional_fields_are_left_out(form_version, operator_client):
    operator_client.post(start_url(form_version), form_data(title="Tides", body="The moon pulls.", tone='"neutral"', words=""))

    assert Run.objects.get().input == {"title": "Tides", "body": "The moon pulls.", "tone": "neutral", "urgent": False}


def test_bad_input_is_shown_next_to_its_field_and_starts_nothing(form_version, operator_client):
    data = form_data(title="Ti", body="Long enough body", tone='"formal"', words="9000")

    response = operator_client.post(start_url(form_version), data)

    html = response.content.decode()
    assert response.status_code == 200
    assert Run.objects.count() == 0
    assert "The run was not started." in html
    assert "&#x27;Ti&#x27; is too short" in errors_of(html, "input-title")
    assert "9000 is greater than the maximum of 500" in errors_of(html, "input-words")
    assert errors_of(html, "input-body") == ""
    assert 'value="Ti"' in html  # what was typed is kept
    assert "Long enough body</textarea>" in html
    assert 'value="9000"' in html


def test_a_missing_required_value_is_reported_on_its_field(form_version, operator_client):
    html = operator_client.post(start_url(form_version), form_data(title="Tides", body="", tone="")).content.decode()

    assert Run.objects.count() == 0
    assert "This field is required." in errors_of(html, "input-body")
    assert "This field is required." in errors_of(html, "input-tone")
    assert errors_of(html, "input-title") == ""


def test_a_problem_inside_a_json_field_names_its_pointer(form_version, operator_client):
    data = form_data(title="Tides", body="The moon pulls.", tone='"formal"', tags='["sea", 4]')

    html = operator_client.post(start_url(form_version), data).content.decode()

    assert "at /tags/1: 4 is not of type &#x27;string&#x27;" in errors_of(html, "input-tags")
    assert Run.objects.count() == 0


def test_raw_json_starts_a_run(version, operator_client):
    response = operator_client.post(start_url(version), {"mode": "json", "input_json": json.dumps({"topic": "tides"})})

    run = Run.objects.get()
    assert response["Location"] == reverse("console:run", args=[run.id])
    assert run.input == {"topic": "tides"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"topic": ""}', "/topic: &#x27;&#x27; should be non-empty"),
        ("{}", "/: &#x27;topic&#x27; is a required property"),
        ("{not json", "Not valid JSON"),
        ("[1, 2]", "The input must be a JSON object."),
    ],
)
def test_bad_raw_json_is_explained_and_kept(version, operator_client, text, message):
    html = operator_client.post(start_url(version), {"mode": "json", "input_json": text}).content.decode()

    assert Run.objects.count() == 0
    assert message in html
    assert '<details class="raw-json" open>' in html
    assert escape(text) + "</textarea>" in html


def test_a_double_submitted_form_starts_one_run(version, operator_client):
    data = {"mode": "form", "submission": str(uuid.uuid4()), "input-topic": "tides"}

    first = operator_client.post(start_url(version), data)
    second = operator_client.post(start_url(version), data)

    assert Run.objects.count() == 1
    assert first["Location"] == second["Location"]


def test_a_reused_form_with_another_input_says_so_and_can_be_sent_again(version, operator_client):
    key = str(uuid.uuid4())
    operator_client.post(start_url(version), {"mode": "form", "submission": key, "input-topic": "tides"})

    html = operator_client.post(start_url(version), {"mode": "form", "submission": key, "input-topic": "waves"}).content.decode()

    assert "already started run" in html
    assert f'value="{key}"' not in html  # a fresh key, so the next submit starts a new run
    assert Run.objects.count() == 1


def test_a_run_starts_on_the_version_the_form_showed(version, operator_client):
    shown = version.number
    newer = save_workflow(definition(version.workflow.name, description="changed"))
    assert newer.number == shown + 1

    operator_client.post(start_url(version), {"mode": "json", "version": str(shown), "input_json": '{"topic": "x"}'})

    assert Run.objects.get().version.number == shown
