from django.urls import path

from cases.api import views
from metrics import api as metrics_api
from staff import api as staff_api

app_name = "api"

urlpatterns = [
    path("triggers/", views.TriggerCreateView.as_view(), name="triggers"),
    path("triggers/batch/", views.TriggerBatchView.as_view(), name="triggers-batch"),
    # Before cases/<case_id>/, which would take "export" for an id.
    path("cases/export/", metrics_api.CasesExportView.as_view(), name="cases-export"),
    path("cases/<str:case_id>/", views.CaseDetailView.as_view(), name="case-detail"),
    path("cases/<str:case_id>/cancel/", views.CaseCancelView.as_view(), name="case-cancel"),
    path("cases/<str:case_id>/evidence/", views.CaseEvidenceView.as_view(), name="case-evidence"),
    path("workflows/", views.WorkflowListView.as_view(), name="workflows"),
    path("metrics/", metrics_api.MetricsView.as_view(), name="metrics"),
    # The metrics events export, plus `stream=audit` for the staff audit trail.
    path("events/", staff_api.EventsExportView.as_view(), name="events-export"),
]
