from django.urls import path

from cases.api import views

app_name = "api"

urlpatterns = [
    path("triggers/", views.TriggerCreateView.as_view(), name="triggers"),
    path("triggers/batch/", views.TriggerBatchView.as_view(), name="triggers-batch"),
    path("cases/<str:case_id>/", views.CaseDetailView.as_view(), name="case-detail"),
    path("cases/<str:case_id>/cancel/", views.CaseCancelView.as_view(), name="case-cancel"),
    path("workflows/", views.WorkflowListView.as_view(), name="workflows"),
]
