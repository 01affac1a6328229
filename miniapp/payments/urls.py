"""The payment providers' side: their webhooks, and the demo provider's hosted page.
Outside /m/<token>/: a provider knows nothing of a customer's link."""

from django.urls import path

from miniapp.payments import views

app_name = "payments"

urlpatterns = [
    path("demo/<str:session>/", views.demo_page, name="demo-page"),
    path("<str:provider>/webhook/", views.webhook, name="webhook"),
]
