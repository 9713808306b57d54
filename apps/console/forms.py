"""The start-a-run forms: one generated from the input schema, one for raw JSON.

The workflow's input schema stays the only judge of an input. The generated fields only turn
what people type into JSON values (numbers, booleans, nested JSON), so they are all optional
to Django; ``run_start`` validates the result and its Problems come back next to the fields
they point at.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django import forms

from apps.engine.errors import Problem

# A text field gets a one-line input only when the schema keeps it short.
SHORT_TEXT = 200
# jsonschema reports a missing property on the parent object, naming it in the message.
_MISSING = re.compile(r"^'(?P<name>.+)' is a required property$")


def _pointer_tokens(pointer: str) -> list[str]:
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]


class EnumField(forms.TypedChoiceField):
    """A select over JSON values: each choice is the value's JSON text, so 1, "1" and null differ."""

    def __init__(self, values: list[Any], *, include_blank: bool, **kwargs: Any) -> None:
        choices = [(json.dumps(v), "—" if v is None else str(v)) for v in values]
        super().__init__(choices=[("", "—")] * include_blank + choices, coerce=json.loads, empty_value="", **kwargs)


def _schema_type(prop: dict[str, Any]) -> str | None:
    kind = prop.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return kind


def schema_field(prop: dict[str, Any], *, label: str, required: bool) -> forms.Field:
    """The form field for one top-level property of an input schema."""
    default = prop.get("default")
    common: dict[str, Any] = {"label": prop.get("title") or label, "help_text": prop.get("description", ""), "required": False}
    attrs: dict[str, Any] = {"required": True} if required else {}
    kind = _schema_type(prop)
    if "enum" in prop:
        initial = json.dumps(default) if "default" in prop else None
        return EnumField(prop["enum"], include_blank=not required, initial=initial, widget=forms.Select(attrs=attrs), **common)
    if kind == "boolean":
        return forms.BooleanField(initial=bool(default), **common)
    if kind in ("integer", "number"):
        step = 1 if kind == "integer" else "any"
        limits = {attr: prop[key] for attr, key in (("min", "minimum"), ("max", "maximum")) if key in prop}
        widget = forms.NumberInput(attrs={**attrs, **limits, "step": step})
        field_class = forms.IntegerField if kind == "integer" else forms.FloatField
        return field_class(initial=default, widget=widget, **common)
    if kind == "string":
        max_length = prop.get("maxLength")
        if max_length is not None:
            attrs["maxlength"] = max_length
        if max_length is not None and max_length <= SHORT_TEXT:
            widget: forms.Widget = forms.TextInput(attrs=attrs)
        else:
            widget = forms.Textarea(attrs={**attrs, "rows": 3 if max_length is None else 6})
        return forms.CharField(initial=default, strip=False, widget=widget, **common)
    # objects, arrays and untyped values are typed as JSON
    common["help_text"] = " ".join(filter(None, [common["help_text"], "JSON value."]))
    return forms.JSONField(initial=default, widget=forms.Textarea(attrs={**attrs, "rows": 4, "class": "mono"}), **common)


class SubmissionMixin(forms.Form):
    """A key per rendered form: a double-submitted form starts its run once."""

    submission = forms.UUIDField(widget=forms.HiddenInput, required=False)


class RunInputForm(SubmissionMixin):
    """Fields generated from the input schema's top-level properties."""

    def __init__(self, schema: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.required_names = set(schema.get("required", []))
        properties = schema.get("properties") or {}
        for name, prop in properties.items():
            if isinstance(prop, dict):
                self.fields[f"input-{name}"] = schema_field(prop, label=name, required=name in self.required_names)

    @property
    def input_fields(self) -> list[tuple[forms.BoundField, bool]]:
        """Each generated field with whether the schema requires it."""
        return [(self[name], name.removeprefix("input-") in self.required_names) for name in self.fields if name.startswith("input-")]

    def input_value(self) -> dict[str, Any]:
        """The run input: every filled field; left blank means left out."""
        values = {name.removeprefix("input-"): value for name, value in self.cleaned_data.items() if name.startswith("input-")}
        return {name: value for name, value in values.items() if value not in ("", None)}

    def add_problems(self, problems: list[Problem]) -> None:
        """Put each Problem next to the field its pointer lands in (the form's top otherwise)."""
        for problem in problems:
            tokens = _pointer_tokens(problem.pointer)
            missing = _MISSING.match(problem.message) if not tokens else None
            name = tokens[0] if tokens else (missing.group("name") if missing else None)
            field = f"input-{name}" if name is not None and f"input-{name}" in self.fields else None
            detail = problem.message
            if field and len(tokens) > 1:
                detail = f"at {problem.pointer}: {detail}"
            elif field is None and problem.pointer:
                detail = f"{problem.pointer}: {detail}"
            self.add_error(field, "This field is required." if missing and field else detail)


class RawInputForm(SubmissionMixin):
    """The whole input as one JSON object."""

    input_json = forms.CharField(label="Input (JSON)", strip=False, widget=forms.Textarea(attrs={"rows": 12, "class": "mono", "spellcheck": "false"}))

    def clean_input_json(self) -> dict[str, Any]:
        try:
            value = json.loads(self.cleaned_data["input_json"])
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise forms.ValidationError("The input must be a JSON object.")
        return value

    def add_problems(self, problems: list[Problem]) -> None:
        for problem in problems:
            self.add_error("input_json", f"{problem.pointer or '/'}: {problem.message}")


def input_skeleton(schema: dict[str, Any]) -> dict[str, Any]:
    """A starting point for the raw JSON form: every default, and each required property."""
    blanks = {"string": "", "integer": 0, "number": 0, "boolean": False, "array": [], "object": {}}
    skeleton: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        if "default" in prop:
            skeleton[name] = prop["default"]
        elif name in schema.get("required", []):
            skeleton[name] = prop["enum"][0] if prop.get("enum") else blanks.get(_schema_type(prop) or "")
    return skeleton
