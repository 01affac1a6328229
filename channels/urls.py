from django.urls import path

from channels import webhooks

app_name = "channels"

urlpatterns = [
    path("twilio/status/", webhooks.twilio_status, name="twilio-status"),
    path("twilio/inbound/", webhooks.twilio_inbound, name="twilio-inbound"),
    path("whatsapp/webhook/", webhooks.whatsapp_webhook, name="whatsapp-webhook"),
    path("unsubscribe/<str:token>/", webhooks.unsubscribe, name="unsubscribe"),
]
