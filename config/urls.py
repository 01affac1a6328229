from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from channels.admin import phone_urls
from config import views
from metrics.views import admin_urls as metrics_admin_urls
from miniapp.branding import brand_css

admin.site.site_header = "Closeloop"
admin.site.site_title = "Closeloop staff"
admin.site.index_title = "Operations"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("admin/channels/phone/", include(phone_urls)),  # the demo phone, a staff-only page
    path("admin/metrics/", include(metrics_admin_urls())),  # the metrics dashboard, staff only
    path("admin/", admin.site.urls),
    path("api/v1/", include("cases.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    # The tenant colour as a stylesheet (the mini-app CSP forbids inline style); not a token.
    path("m/brand.css", brand_css, name="miniapp-brand-css"),
    path("payments/", include("miniapp.payments.urls")),  # provider webhooks, demo page
    path("m/", include("miniapp.urls")),
    path("channels/", include("channels.urls")),
]

if settings.BENCH_BARE_VIEW:
    # The framework's floor for bench/miniapp.py: full middleware, no database, no template.
    urlpatterns.append(path("bench/bare", views.bench_bare))
