from django.urls import path

from cases.api import views
from metrics import api as metrics_api

app_name = "api"

urlpatterns = [
    path("triggers/", views.TriggerCreateView.as_view(), name="triggers"),
    path("triggers/batch/", views.TriggerBatchView.as_view(), name="triggers-batch"),
    # Before cases/<case_id>/, which would take "export" for an id.
    path("cases/export/", metrics_api.CasesExportView.as_view(), name="cases-export"),
    path("cases/<str:case_id>/", views.CaseDetailView.as_view(), name="case-detail"),
    path("cases/<str:case_id>/cancel/", views.CaseCancelView.as_view(), name="case-cancel"),
    path("workflows/", views.WorkflowListView.as_view(), name="workflows"),
    path("metrics/", metrics_api.MetricsView.as_view(), name="metrics"),
    path("events/", metrics_api.EventsExportView.as_view(), name="events-export"),
]
