"""The tenant's brand colour as a stylesheet (/m/brand.css).

The mini-app's Content-Security-Policy allows no inline style, so the colour from settings
cannot sit in a style attribute: this tiny stylesheet sets the `--brand` custom property that
static/miniapp/miniapp.css uses. It is the same for every customer, so browsers may keep it.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

# An hour: a new colour (a deployment) reaches every browser within that.
BRAND_CSS_MAX_AGE = 3600


@require_GET
def brand_css(request: HttpRequest) -> HttpResponse:
    # BRAND_COLOUR is checked to be a plain hex colour when settings load.
    response = HttpResponse(
        f":root {{ --brand: {settings.BRAND_COLOUR}; }}\n", content_type="text/css; charset=utf-8"
    )
    response["Cache-Control"] = f"public, max-age={BRAND_CSS_MAX_AGE}"
    return response
