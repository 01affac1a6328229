"""Closeloop settings.

The environment is read once, here. Production is the default shape: DEBUG is off and
SECRET_KEY must be given. The demo (`make demo`) and the tests change only what they must.
Every variable is listed in docs/configuration.md.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {value!r}") from exc


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = "insecure-development-key-only-used-with-DEBUG-on"  # noqa: S105

# Known facts (date of birth, postcode, account last-4) are stored as keyed hashes. The key
# lives outside the database so a stolen dump cannot be brute-forced offline; it must outlive
# SECRET_KEY rotations, hence its own variable.
KNOWN_FACTS_KEY = os.environ.get("KNOWN_FACTS_KEY", SECRET_KEY)

# Personal fields and uploaded documents are encrypted at rest (privacy/crypto.py): Fernet
# keys, comma-separated, newest first. The first encrypts; every one decrypts, so rotation is
# "put a new key first, run `manage.py privacy rotate-keys`, then drop the old one". Without
# the variable, DEBUG (the demo, development) uses a fixed key anyone can read in this file;
# `check --deploy` refuses both that key and no key at all.
DEBUG_FIELD_ENCRYPTION_KEY = base64.urlsafe_b64encode(
    hashlib.sha256(b"closeloop development field encryption key, never for production").digest()
).decode()
FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEYS")
if not FIELD_ENCRYPTION_KEYS and DEBUG:
    FIELD_ENCRYPTION_KEYS = [DEBUG_FIELD_ENCRYPTION_KEY]

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
PORT = env_int("PORT", 8000)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_htmx",
    "cases",
    "policies",
    "channels",
    "miniapp",
    "writeback",
    "metrics",
    "agents",
    "staff",
    "hooks",
    "privacy",
    # No models: connects the job signals that carry request ids (config/apps.py).
    "config.apps.ObservabilityConfig",
]

MIDDLEWARE = [
    # First: every later middleware's log lines carry the request id, and the latency
    # histogram times the whole stack, refusals included (config/observability.py).
    "config.observability.RequestIdMiddleware",
    "config.observability.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "miniapp.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before sessions: a refused request costs no session read.
    "miniapp.middleware.RateLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    # After OTPMiddleware: a session signed in through the identity provider counts as
    # two-factor verified (staff/oidc.py); nothing happens while OIDC_ENABLED is off.
    "staff.oidc.IdentityProviderVerifiedMiddleware",
    # After OTPMiddleware: no admin page until a staff member gave their code.
    "staff.middleware.StaffTwoFactorMiddleware",
    # Admin requests only: who is changing things, for the audit trail (staff/tracking.py).
    "staff.middleware.StaffAuditMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# DATABASE_URL unset: an embedded SQLite file, so a newcomer needs nothing installed.
# WAL lets the web server and the worker read while the other writes; IMMEDIATE transactions
# take the write lock up front, so two writers queue instead of failing with "database is
# locked" half-way through a transaction.
DATA_DIR = Path(os.environ.get("DATA_DIR", BASE_DIR / "var"))
DATABASE_URL = os.environ.get("DATABASE_URL", "")
SQLITE_OPTIONS = {
    "init_command": (
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=20000;"
    ),
    "transaction_mode": "IMMEDIATE",
    "timeout": 20,
}
if DATABASE_URL.startswith("sqlite"):
    # A SQLite file named by URL (a second process sharing the tests' database) gets the
    # same WAL and locking settings as the default file.
    DATABASES = {"default": {**dj_database_url.parse(DATABASE_URL), "OPTIONS": SQLITE_OPTIONS}}
elif DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60), conn_health_checks=True
        )
    }
else:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "closeloop.sqlite3",
            "OPTIONS": SQLITE_OPTIONS,
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static files ---------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Security -------------------------------------------------------------------------------
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
# The header alone changes nothing until the domain is submitted to the preload list.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"

# Request bodies above this are refused with 413 before anything is parsed or written.
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 5 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
API_BATCH_MAX_TRIGGERS = env_int("API_BATCH_MAX_TRIGGERS", 1000)
# Requests per API key, counted in the shared cache so every web process spends from one
# budget; an API client's own `rate_limit` overrides it. Empty or "off": no limit.
API_RATE_LIMIT = os.environ.get("API_RATE_LIMIT", "600/minute").strip()
if API_RATE_LIMIT and not re.fullmatch(r"off|\d+/(second|minute|hour|day)", API_RATE_LIMIT):
    raise ImproperlyConfigured(
        f"API_RATE_LIMIT must look like 600/minute (per second, minute, hour or day) or off, "
        f"got {API_RATE_LIMIT!r}"
    )

# --- Cache ----------------------------------------------------------------------------------
# Shared by every web process (the mini-app's rate-limit counters must hold across gunicorn
# workers and hosts): a database table by default, so nothing more needs running; Redis when
# REDIS_URL is set, for atomic counters and no table to keep small.
CACHE_TABLE = "closeloop_cache"  # created by `migrate` (miniapp/migrations/0003_cache_table.py)
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": CACHE_TABLE,
            # Past MAX_ENTRIES Django deletes a third of the rows, live counters included,
            # which would hand a flood a fresh allowance; expired rows go first at this size.
            "OPTIONS": {"MAX_ENTRIES": env_int("CACHE_MAX_ENTRIES", 100_000)},
        }
    }

# --- Mini-app rate limits (miniapp/ratelimit.py) --------------------------------------------
# Fixed windows per client IP and per link. Tokens are 256 random bits, so the limits are not
# what stops guessing; they stop floods and scripted enumeration from one address, and the
# identity answers (codes, known facts) get a stricter budget on top of the per-case lock.
MINIAPP_RATE_LIMITS = env_bool("MINIAPP_RATE_LIMITS", True)
MINIAPP_RATE_PAGES_PER_IP = env_int("MINIAPP_RATE_PAGES_PER_IP", 300)  # per minute
# A confirmation page polls every 3 s (20 a minute) while the writeback is pending.
MINIAPP_RATE_PAGES_PER_LINK = env_int("MINIAPP_RATE_PAGES_PER_LINK", 60)  # per minute
MINIAPP_RATE_CODES_PER_IP = env_int("MINIAPP_RATE_CODES_PER_IP", 30)  # per 15 minutes
MINIAPP_RATE_CODES_PER_LINK = env_int("MINIAPP_RATE_CODES_PER_LINK", 10)  # per 15 minutes
MINIAPP_RATE_UNKNOWN_LINKS_PER_IP = env_int("MINIAPP_RATE_UNKNOWN_LINKS_PER_IP", 20)  # per hour
# A bare view at /bench/bare for bench/miniapp.py's baseline; never on in production.
BENCH_BARE_VIEW = env_bool("BENCH_BARE_VIEW", False)

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["cases.api.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["cases.api.auth.IsApiClient"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "cases.api.errors.api_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["cases.api.throttles.ApiKeyRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Closeloop API",
    "DESCRIPTION": (
        "Push triggers from a source system, read cases with their timeline. "
        "Authenticate with `Authorization: Bearer <key>` (create one with "
        "`python manage.py create_api_key NAME`). Each key has a request budget (600 a "
        "minute unless set otherwise); over it the answer is 429 with `Retry-After` in "
        "seconds. Send `X-Request-ID` to find your calls in our logs; every answer echoes it."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
}

# --- Cases ----------------------------------------------------------------------------------
CASE_LINK_TTL_DAYS = env_int("CASE_LINK_TTL_DAYS", 7)

# File intake: a drop folder watched by a scheduled job (see cases/intake.py).
INTAKE_DIR = os.environ.get("INTAKE_DIR", "")
INTAKE_SETTLE_SECONDS = env_int("INTAKE_SETTLE_SECONDS", 30)

# Evidence (cases/evidence.py): the sealer appends events to their case's hash chain once
# they are this old, so that a transaction still committing an earlier event is not overtaken.
EVIDENCE_SETTLE_SECONDS = env_int("EVIDENCE_SETTLE_SECONDS", 10)

# --- Writeback ------------------------------------------------------------------------------
# The system of record that the shipped "core_rest" target posts to (a target with a blank
# base URL uses this), and its bearer token; targets name their secret's variable.
CORE_API_URL = os.environ.get("CORE_API_URL", "http://127.0.0.1:8100").rstrip("/")
CORE_API_TOKEN = os.environ.get("CORE_API_TOKEN", "")
# A delivery's claim on an outcome. Longer than Q_TIMEOUT, so a claim only expires once
# the worker holding it is surely dead; then another worker may deliver it.
WRITEBACK_LEASE_SECONDS = env_int("WRITEBACK_LEASE_SECONDS", 180)
WRITEBACK_SWEEP_BATCH = env_int("WRITEBACK_SWEEP_BATCH", 500)
WRITEBACK_SWEEP_SECONDS = env_int("WRITEBACK_SWEEP_SECONDS", 60)
# Deliveries one worker runs side by side (each waits mostly on the target's answer).
WRITEBACK_CONCURRENCY = env_int("WRITEBACK_CONCURRENCY", 8)

# --- Outbound webhooks (hooks/) --------------------------------------------------------------
# Each delivery is POSTed until a 2xx answer, at most WEBHOOK_MAX_ATTEMPTS times, with
# exponential backoff and full jitter between attempts (base doubling up to the cap).
WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("WEBHOOK_TIMEOUT_SECONDS", "10"))
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 8)
WEBHOOK_BACKOFF_BASE_SECONDS = float(os.environ.get("WEBHOOK_BACKOFF_BASE_SECONDS", "30"))
WEBHOOK_BACKOFF_CAP_SECONDS = float(os.environ.get("WEBHOOK_BACKOFF_CAP_SECONDS", "3600"))
# A claim outlives the request's timeout, so it only expires once its worker is surely dead.
WEBHOOK_LEASE_SECONDS = env_int("WEBHOOK_LEASE_SECONDS", 120)
WEBHOOK_SWEEP_BATCH = env_int("WEBHOOK_SWEEP_BATCH", 500)
WEBHOOK_SWEEP_SECONDS = env_int("WEBHOOK_SWEEP_SECONDS", 60)
WEBHOOK_CONCURRENCY = env_int("WEBHOOK_CONCURRENCY", 8)
if WEBHOOK_LEASE_SECONDS <= WEBHOOK_TIMEOUT_SECONDS:
    raise ImproperlyConfigured("WEBHOOK_LEASE_SECONDS must be longer than WEBHOOK_TIMEOUT_SECONDS.")

# --- Agents (agents/) -----------------------------------------------------------------------
# SLA of an exception task by its priority: "70:4,40:24,0:72" means priority 70 and up is due
# within 4 hours, 40–69 within 24, anything lower within 72 (agents/sla.py parses it).
AGENT_SLA_HOURS = os.environ.get("AGENT_SLA_HOURS", "70:4,40:24,0:72")
# An out-of-policy offer an agent sends whose amount is above this (in the case's currency)
# waits for a second person with agents.approve_offer.
try:
    AGENT_OFFER_APPROVAL_LIMIT = Decimal(os.environ.get("AGENT_OFFER_APPROVAL_LIMIT", "250.00"))
except InvalidOperation as exc:
    raise ImproperlyConfigured("AGENT_OFFER_APPROVAL_LIMIT must be an amount, e.g. 250.00") from exc

# --- Staff sign-in (staff/) -----------------------------------------------------------------
# Two-factor (TOTP) for every admin page: on unless DEBUG, so production cannot forget it and
# the demo's one-command start needs no phone.
STAFF_2FA_REQUIRED = env_bool("STAFF_2FA_REQUIRED", not DEBUG)
# Failed sign-ins (password or code) before the login refuses without checking, per 15 minutes:
# per username against guessing one account, per address against spraying many (a whole
# office behind one address shares that budget, hence the larger number).
STAFF_LOGIN_FAILURES_PER_USERNAME = env_int("STAFF_LOGIN_FAILURES_PER_USERNAME", 5)
STAFF_LOGIN_FAILURES_PER_IP = env_int("STAFF_LOGIN_FAILURES_PER_IP", 20)
# The name authenticator apps show beside the account.
OTP_TOTP_ISSUER = os.environ.get("OTP_TOTP_ISSUER", "Closeloop")
# Never show a TOTP key or its QR code in the admin after enrolment: only its owner has it.
OTP_ADMIN_HIDE_SENSITIVE_DATA = True

# --- Staff single sign-on with OpenID Connect (staff/oidc.py, docs/sso.md) ------------------
# Off unless OIDC_ENABLED: then the admin login offers "Sign in with <OIDC_PROVIDER_NAME>"
# beside the password form, and /oidc/ exists. mozilla-django-oidc reads the OIDC_* names.
OIDC_ENABLED = env_bool("OIDC_ENABLED", False)
OIDC_PROVIDER_NAME = os.environ.get("OIDC_PROVIDER_NAME", "single sign-on")
OIDC_RP_CLIENT_ID = os.environ.get("OIDC_RP_CLIENT_ID", "")
OIDC_RP_CLIENT_SECRET = os.environ.get("OIDC_RP_CLIENT_SECRET", "")
OIDC_OP_AUTHORIZATION_ENDPOINT = os.environ.get("OIDC_OP_AUTHORIZATION_ENDPOINT", "")
OIDC_OP_TOKEN_ENDPOINT = os.environ.get("OIDC_OP_TOKEN_ENDPOINT", "")
OIDC_OP_USER_ENDPOINT = os.environ.get("OIDC_OP_USER_ENDPOINT", "")
OIDC_OP_JWKS_ENDPOINT = os.environ.get("OIDC_OP_JWKS_ENDPOINT", "")
OIDC_RP_SIGN_ALGO = os.environ.get("OIDC_RP_SIGN_ALGO", "RS256")
OIDC_RP_SCOPES = os.environ.get("OIDC_RP_SCOPES", "openid email profile")
OIDC_USE_PKCE = env_bool("OIDC_USE_PKCE", True)
# Seconds to wait for the provider's token, userinfo and key endpoints (the library waits
# forever by default, which would hold a web worker while the provider is down).
OIDC_TIMEOUT = env_int("OIDC_TIMEOUT", 10)
# Which claim becomes the Closeloop username ("sub" never changes; "email" or
# "preferred_username" read better in the admin), and which carries the person's groups.
OIDC_USERNAME_CLAIM = os.environ.get("OIDC_USERNAME_CLAIM", "sub").strip() or "sub"
OIDC_GROUPS_CLAIM = os.environ.get("OIDC_GROUPS_CLAIM", "groups").strip() or "groups"
# "idp-agents=Agent,idp-ops=Operations": which identity-provider group gives which role
# (staff/roles.py); role names are checked by the system check staff.E101. Entries may be
# separated by ";" instead, for group names with commas in them (LDAP distinguished names).
OIDC_ROLE_MAP_TEXT = os.environ.get("OIDC_ROLE_MAP", "")


def _role_map(text: str) -> dict[str, list[str]]:
    separator = ";" if ";" in text else ","
    mapping: dict[str, list[str]] = {}
    for entry in (item.strip() for item in text.split(separator)):
        if not entry:
            continue
        group, equals, role = entry.rpartition("=")
        if not equals or not group.strip() or not role.strip():
            raise ImproperlyConfigured(
                f"OIDC_ROLE_MAP entries look like idp-group=Role, got {entry!r}"
            )
        mapping.setdefault(group.strip(), []).append(role.strip())
    return mapping


OIDC_ROLE_MAP = _role_map(OIDC_ROLE_MAP_TEXT)
# The callback's URL name, which mozilla-django-oidc reverses for the redirect_uri.
OIDC_AUTHENTICATION_CALLBACK_URL = "staff-oidc-callback"
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]
if OIDC_ENABLED:
    _oidc_missing = [
        name
        for name in (
            "OIDC_RP_CLIENT_ID",
            "OIDC_RP_CLIENT_SECRET",
            "OIDC_OP_AUTHORIZATION_ENDPOINT",
            "OIDC_OP_TOKEN_ENDPOINT",
            "OIDC_OP_USER_ENDPOINT",
        )
        if not globals()[name]
    ]
    # RS*/ES* tokens are checked against the provider's published keys; HS* with the secret.
    if OIDC_RP_SIGN_ALGO[:2] in ("RS", "ES") and not OIDC_OP_JWKS_ENDPOINT:
        _oidc_missing.append("OIDC_OP_JWKS_ENDPOINT")
    if _oidc_missing:
        raise ImproperlyConfigured(f"OIDC_ENABLED needs {', '.join(_oidc_missing)} to be set.")
    if not OIDC_ROLE_MAP:
        raise ImproperlyConfigured(
            "OIDC_ENABLED needs OIDC_ROLE_MAP (idp-group=Role,…): without it no one may sign in."
        )
    AUTHENTICATION_BACKENDS.append("staff.oidc.StaffOIDCBackend")

# --- Outreach (channels/) -------------------------------------------------------------------
# The brand customers see in messages and on the mini-app.
BRAND_NAME = os.environ.get("BRAND_NAME", "Closeloop Bank")
# Tenant branding on the mini-app: the accent colour must keep WCAG 2.1 AA contrast (4.5:1)
# with white text; the logo is served from our own static files or the tenant's domain.
BRAND_COLOUR = os.environ.get("BRAND_COLOUR", "#0b5cad")
BRAND_LOGO_URL = os.environ.get("BRAND_LOGO_URL", "")
# The colour is written into a stylesheet (/m/brand.css): only a plain hex colour may pass.
if not re.fullmatch(r"#[0-9a-fA-F]{6}", BRAND_COLOUR):
    raise ImproperlyConfigured(f"BRAND_COLOUR must be a colour like #0b5cad, got {BRAND_COLOUR!r}")
# Providers per channel. `outbox` keeps messages in the database and shows them on a staff
# "phone" page: the default for development and the demo. Production sets real ones.
SMS_PROVIDER = os.environ.get("SMS_PROVIDER", "outbox")  # outbox | twilio
EMAIL_PROVIDER = os.environ.get("EMAIL_PROVIDER", "outbox")  # outbox | smtp
WHATSAPP_PROVIDER = os.environ.get("WHATSAPP_PROVIDER", "outbox")  # outbox | cloud_api
TWILIO_API_BASE = os.environ.get("TWILIO_API_BASE", "https://api.twilio.com").rstrip("/")
TWILIO_ACCOUNT_SID = os.environ.get("TWILIO_ACCOUNT_SID", "")
TWILIO_AUTH_TOKEN = os.environ.get("TWILIO_AUTH_TOKEN", "")
TWILIO_FROM_NUMBER = os.environ.get("TWILIO_FROM_NUMBER", "")
WHATSAPP_API_BASE = os.environ.get("WHATSAPP_API_BASE", "https://graph.facebook.com/v21.0")
WHATSAPP_API_BASE = WHATSAPP_API_BASE.rstrip("/")
WHATSAPP_TOKEN = os.environ.get("WHATSAPP_TOKEN", "")
WHATSAPP_PHONE_NUMBER_ID = os.environ.get("WHATSAPP_PHONE_NUMBER_ID", "")
WHATSAPP_APP_SECRET = os.environ.get("WHATSAPP_APP_SECRET", "")
WHATSAPP_VERIFY_TOKEN = os.environ.get("WHATSAPP_VERIFY_TOKEN", "")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "reminders@localhost")
# Contact rules across all workflows (per customer).
OUTREACH_FREQUENCY_CAP = env_int("OUTREACH_FREQUENCY_CAP", 7)
OUTREACH_FREQUENCY_WINDOW_DAYS = env_int("OUTREACH_FREQUENCY_WINDOW_DAYS", 7)
# Sending: attempts per message before a channel counts as failed, and the parallel provider
# calls one worker makes (the calls wait on the network, not the CPU).
OUTREACH_SEND_MAX_ATTEMPTS = env_int("OUTREACH_SEND_MAX_ATTEMPTS", 4)
OUTREACH_SEND_CONCURRENCY = env_int("OUTREACH_SEND_CONCURRENCY", 16)
OUTREACH_DISPATCH_BATCH = env_int("OUTREACH_DISPATCH_BATCH", 500)
# Seconds to wait for Twilio's or Meta's answer to a send. Both answer in well under a
# second; a struggling provider is better served by backoff than by held worker threads.
OUTREACH_PROVIDER_TIMEOUT = float(os.environ.get("OUTREACH_PROVIDER_TIMEOUT", "5"))
# The admin warns when an SMS template renders to more segments than this.
SMS_MAX_SEGMENTS = env_int("SMS_MAX_SEGMENTS", 3)

# --- Payments and uploads (miniapp/) -------------------------------------------------------
# Pay now and card updates run on the provider's hosted page; we keep its reference and the
# card's last four digits, never a card number. `demo` is a fake hosted page of our own.
PAYMENT_PROVIDER = os.environ.get("PAYMENT_PROVIDER", "demo")  # demo | stripe
STRIPE_API_BASE = os.environ.get("STRIPE_API_BASE", "https://api.stripe.com").rstrip("/")
STRIPE_SECRET_KEY = os.environ.get("STRIPE_SECRET_KEY", "")
STRIPE_WEBHOOK_SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
# Customers' uploaded documents: outside STATIC_ROOT and any URL; nothing serves them.
PRIVATE_MEDIA_ROOT = Path(os.environ.get("PRIVATE_MEDIA_ROOT", DATA_DIR / "private"))
# Uploads larger than this are streamed to a temporary file instead of held in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# --- Background jobs (django-q2) ------------------------------------------------------------
# Q_BROKER=orm (the default) keeps the job queue in the database: nothing more to run. With
# several worker clusters polling one table, Redis (Q_BROKER=redis, on REDIS_URL) takes the
# queue off PostgreSQL; PostgreSQL stays the system of record either way.
# The ORM broker redelivers a job whose worker died after `retry` seconds, so `retry` must
# exceed `timeout` (a slow job is never redelivered while it still runs) and every job is
# written to be idempotent. max_attempts stops a poisoned job from looping forever.
# The Redis broker pops a job off a list and never redelivers it: a job held by a cluster
# that dies is lost. No work is, because every job's work is also swept from the database by
# a scheduled job (outreach_tick, the writeback and webhook sweeps, prepare_pending_cases).
Q_BROKER = os.environ.get("Q_BROKER", "orm").strip().lower() or "orm"
if Q_BROKER not in {"orm", "redis"}:
    raise ImproperlyConfigured(f"Q_BROKER must be orm or redis, got {Q_BROKER!r}")
if Q_BROKER == "redis" and not REDIS_URL:
    raise ImproperlyConfigured("Q_BROKER=redis needs REDIS_URL (e.g. redis://redis:6379/0).")
Q_CLUSTER = {
    # Names the Redis keys (django_q:<name>:q) and salts the jobs' signatures: every web
    # and worker process of one deployment shares it; deployments sharing a Redis differ.
    "name": os.environ.get("Q_CLUSTER_NAME", "closeloop"),
    "workers": env_int("Q_WORKERS", 2),
    "timeout": env_int("Q_TIMEOUT", 120),
    "retry": env_int("Q_RETRY", 300),
    "max_attempts": env_int("Q_MAX_ATTEMPTS", 5),
    "ack_failures": True,
    "save_limit": 1000,
    "catch_up": False,
    "poll": 0.5,
    "label": "Background jobs",
    # Every cluster runs django-q2's scheduler unless told not to: each due schedule row is
    # taken under SELECT … FOR UPDATE, so however many clusters run, a schedule fires once.
    "scheduler": env_bool("Q_SCHEDULER", True),
    # psycopg's pool is not used (DATABASES has no "pool" option): a pool opened before
    # django-q2 forks its workers would be shared by processes that must not share
    # connections. Each worker keeps its own persistent connection (DB_CONN_MAX_AGE).
}
if Q_BROKER == "redis":
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"
if Q_CLUSTER["retry"] <= Q_CLUSTER["timeout"]:
    raise ImproperlyConfigured("Q_RETRY must be longer than Q_TIMEOUT.")

# --- Health and metrics (config/health.py, config/metrics.py) --------------------------------
# /healthz fails when a job that is due has waited longer than this (messages, writebacks,
# webhooks, the job queue): the workers are down, stuck or too few.
HEALTHZ_MAX_JOB_AGE_SECONDS = env_int("HEALTHZ_MAX_JOB_AGE_SECONDS", 900)
# /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`; unset, /metrics is a 404.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")

# --- Retention (privacy/) --------------------------------------------------------------------
# A customer whose cases are all closed is anonymised this many days after the last closed,
# unless the case's workflow sets its own retention_days. The case timelines (the evidence)
# are kept EVIDENCE_RETENTION_YEARS after a case closed, then the case is deleted whole.
RETENTION_DEFAULT_DAYS = env_int("RETENTION_DEFAULT_DAYS", 365)
EVIDENCE_RETENTION_YEARS = env_int("EVIDENCE_RETENTION_YEARS", 5)
# Customers (or expired cases) handled per transaction by the daily retention job.
RETENTION_BATCH = env_int("RETENTION_BATCH", 200)

# --- Logging --------------------------------------------------------------------------------
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
# json: one object per line for log shippers; plain: one readable line, for a terminal.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain" if DEBUG else "json").strip().lower()
if LOG_FORMAT not in ("json", "plain"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or plain, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Every line carries the id of the request (or of the request that enqueued the job) it
    # belongs to; "-" outside both.
    # Phone numbers, emails, link tokens, API keys, codes and card-like numbers are masked
    # in every record before it is written (privacy/logs.py).
    "filters": {
        "request_id": {"()": "config.observability.RequestIdFilter"},
        "redact": {"()": "privacy.logs.RedactFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "privacy.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["request_id", "redact"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # At DEBUG, a template's missing variable is logged with the whole context: a
        # customer's page context holds their name, link token and account details.
        "django.template": {"level": "INFO"},
        # httpx logs each request's full URL at INFO; provider URLs can carry a phone number
        # (Twilio's Messages.json?To=…), and a large send would log a line per message.
        "httpx": {"level": "WARNING"},
    },
}
