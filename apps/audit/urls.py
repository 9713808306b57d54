from django.urls import path

from . import exports

app_name = "audit"

urlpatterns = [
    path("audit/export.csv", exports.audit_csv, name="audit-csv"),
    path("audit/export.json", exports.audit_json, name="audit-json"),
]
