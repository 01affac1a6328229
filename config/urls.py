from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from channels.admin import phone_urls
from config import views

admin.site.site_header = "Closeloop"
admin.site.site_title = "Closeloop staff"
admin.site.index_title = "Operations"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("admin/channels/phone/", include(phone_urls)),  # the demo phone, a staff-only page
    path("admin/", admin.site.urls),
    path("api/v1/", include("cases.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("m/", include("miniapp.urls")),
    path("channels/", include("channels.urls")),
]
