from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from agents.views import admin_urls as agents_admin_urls
from channels.admin import phone_urls
from config import views
from metrics.views import admin_urls as metrics_admin_urls
from miniapp.branding import brand_css
from staff.views import admin_urls as staff_admin_urls

admin.site.site_header = "Closeloop"
admin.site.site_title = "Closeloop staff"
admin.site.index_title = "Operations"

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    # Prometheus scrape target; a 404 unless METRICS_TOKEN is set (docs/operations.md).
    path("metrics", views.metrics, name="metrics"),
    path("admin/channels/phone/", include(phone_urls)),  # the demo phone, a staff-only page
    path("admin/metrics/", include(metrics_admin_urls())),  # the metrics dashboard, staff only
    path("admin/agents/case/", include(agents_admin_urls())),  # the agent's case page
    path("admin/staff/two-factor/", include(staff_admin_urls())),  # enrol and verify
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

if settings.OIDC_ENABLED:
    # Staff single sign-on (docs/sso.md): absent, so a 404, while the feature is off.
    from staff.oidc_views import oidc_urls

    urlpatterns.append(path("oidc/", include(oidc_urls())))

if settings.BENCH_BARE_VIEW:
    # The framework's floor for bench/miniapp.py: full middleware, no database, no template.
    urlpatterns.append(path("bench/bare", views.bench_bare))
