"""What the review pages post, turned into a service ``Decision``.

Errors come out as the service's own ``DecisionInvalid`` with JSON pointers (``/output``,
``/comment``, ``/version``), so a typo in the edit box and a schema violation are shown the same
way, next to the field they point at.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.http import QueryDict

from apps.engine.errors import Problem

from .models import DecisionKind, ReviewTask
from .services import Decision, DecisionInvalid


def edits_as_text(task: ReviewTask) -> bool:
    """A text output is edited as the text itself; anything else as JSON."""
    return isinstance(task.current_output, str)


def _lines(text: str) -> str:
    # Browsers send textarea line breaks as CRLF; the output had LF.
    return text.replace("\r\n", "\n")


def decision_from_post(data: QueryDict, task: ReviewTask) -> Decision:
    """The decision one of the review page's forms posted; raises DecisionInvalid."""
    kind = data.get("action", "")
    if kind not in DecisionKind.values:
        raise DecisionInvalid([Problem("/decision", "choose approve, edit or reject")])
    version = data.get("version", "")
    if not version.isdigit():
        raise DecisionInvalid([Problem("/version", "the page did not say which version of the review it showed: reload it")])
    output = None
    if kind == DecisionKind.EDIT:
        output = _edited_output(_lines(data.get("output", "")), task)
    return Decision(kind=kind, output=output, comment=_lines(data.get("comment", "")), version=int(version))


def _edited_output(text: str, task: ReviewTask) -> Any:
    if edits_as_text(task):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DecisionInvalid([Problem("/output", f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")]) from None


class ReviewIdsField(forms.Field):
    """The checked rows of the inbox: a list of review ids."""

    widget = forms.MultipleHiddenInput

    def to_python(self, value: Any) -> list[int]:
        values = value if isinstance(value, list | tuple) else [value] if value else []
        if not all(str(v).isdigit() for v in values):
            raise forms.ValidationError("Unknown review selected.")
        return [int(v) for v in values]

    def validate(self, value: list[int]) -> None:
        if not value:
            raise forms.ValidationError("Select at least one review.")


class BulkDecisionForm(forms.Form):
    """Approve the selected reviews, or reject them all with one reason."""

    review = ReviewIdsField()
    action = forms.ChoiceField(choices=[(DecisionKind.APPROVE, "Approve"), (DecisionKind.REJECT, "Reject")])
    comment = forms.CharField(required=False, strip=False, max_length=5000)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("action") == DecisionKind.REJECT and not data.get("comment", "").strip():
            self.add_error("comment", "A rejection needs a reason.")
        return data

    def decision(self) -> Decision:
        return Decision(kind=self.cleaned_data["action"], comment=_lines(self.cleaned_data["comment"]))
