from django.urls import path

from . import editor_views, overview_views, version_views, views

app_name = "console"
urlpatterns = [
    path("", views.home, name="home"),
    path("overview/", overview_views.overview, name="overview"),
    path("workflows/", views.workflow_list, name="workflows"),
    path("workflows/new/", editor_views.workflow_new, name="new"),  # before <name>: "new" is a workflow name no more
    path("workflows/new/validate/", editor_views.workflow_validate, name="new_validate"),
    path("workflows/<slug:name>/", views.workflow_detail, name="workflow"),
    path("workflows/<slug:name>/edit/", editor_views.workflow_edit, name="edit"),
    path("workflows/<slug:name>/edit/validate/", editor_views.workflow_validate, name="edit_validate"),
    path("workflows/<slug:name>/publish/", editor_views.workflow_publish_confirm, name="publish"),
    path("workflows/<slug:name>/test-run/", editor_views.workflow_test_run, name="test_run"),
    path("workflows/<slug:name>/run/", views.workflow_run_start, name="run_start"),
    path("workflows/<slug:name>/versions/", version_views.version_list, name="versions"),
    path("workflows/<slug:name>/versions/compare/", version_views.version_compare, name="version_compare"),
    path("workflows/<slug:name>/versions/<int:number>/", version_views.version_detail, name="version"),
    path("workflows/<slug:name>/versions/<int:number>/rollback/", version_views.version_rollback, name="version_rollback"),
    path("workflows/<slug:name>/versions/<int:a>/diff/<int:b>/", version_views.version_diff, name="version_diff"),
    path("runs/", views.run_list, name="runs"),
    path("runs/<uuid:run_id>/", views.run_detail, name="run"),
    path("runs/<uuid:run_id>/nodes/", views.run_node_table, name="run_nodes"),
    path("runs/<uuid:run_id>/cancel/", views.run_cancel, name="run_cancel"),
    path("runs/<uuid:run_id>/retry/", views.run_retry, name="run_retry"),
    path("runs/<uuid:run_id>/rerun/", views.run_rerun, name="run_rerun"),
    path("runs/<uuid:run_id>/rerun/preview/", views.run_rerun_preview, name="run_rerun_preview"),
    path("runs/<uuid:run_id>/nodes/<str:node_id>/", views.node_detail, name="node"),
]
