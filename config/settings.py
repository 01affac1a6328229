"""Closeloop settings.

The environment is read once, here. Production is the default shape: DEBUG is off and
SECRET_KEY must be given. The demo (`make demo`) and the tests change only what they must.
Every variable is listed in docs/configuration.md.
"""

from __future__ import annotations

import os
import re
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
]

MIDDLEWARE = [
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
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Closeloop API",
    "DESCRIPTION": (
        "Push triggers from a source system, read cases with their timeline. "
        "Authenticate with `Authorization: Bearer <key>` (create one with "
        "`python manage.py create_api_key NAME`)."
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
# The ORM broker redelivers a job whose worker died after `retry` seconds, so `retry` must
# exceed `timeout` (a slow job is never redelivered while it still runs) and every job is
# written to be idempotent. max_attempts stops a poisoned job from looping forever.
Q_CLUSTER = {
    "name": "closeloop",
    "orm": "default",
    "workers": env_int("Q_WORKERS", 2),
    "timeout": env_int("Q_TIMEOUT", 120),
    "retry": env_int("Q_RETRY", 300),
    "max_attempts": env_int("Q_MAX_ATTEMPTS", 5),
    "ack_failures": True,
    "save_limit": 1000,
    "catch_up": False,
    "poll": 0.5,
    "label": "Background jobs",
}

# --- Logging --------------------------------------------------------------------------------
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # httpx logs each request's full URL at INFO; provider URLs can carry a phone number
        # (Twilio's Messages.json?To=…), and a large send would log a line per message.
        "httpx": {"level": "WARNING"},
    },
}
