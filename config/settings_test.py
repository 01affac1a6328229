"""Test settings: production settings with only what tests must change."""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "tests-only-not-a-secret")
os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="closeloop-test-"))
# A fixed key for the tests only (tests run with DEBUG off, as production does).
os.environ.setdefault("FIELD_ENCRYPTION_KEYS", "dGVzdHMtb25seS1maWVsZC1lbmNyeXB0aW9uLWtleSE=")

from config.settings import *  # noqa: F403

# The test client speaks plain HTTP; HTTPS redirection is covered by `check --deploy`.
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
# Manifest storage needs `collectstatic`; tests use plain storage.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
# On SQLite the test database is a file, not memory, so a real worker process started by a
# test (tests/workers.py) can share it.
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-closeloop.sqlite3")}  # noqa: F405
# Jobs run inline in tests unless a test starts a real worker.
Q_CLUSTER = {**Q_CLUSTER, "sync": True}  # noqa: F405
# Serve static files from the app folders directly, without a collectstatic step.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
# Rate-limit counters outlive a test in the cache table; tests that exercise the limits turn
# them on and clear the cache (tests/miniapp/test_security.py).
MINIAPP_RATE_LIMITS = False
API_RATE_LIMIT = "off"
# Existing admin tests sign in with force_login; tests/staff turn two-factor on themselves.
STAFF_2FA_REQUIRED = False
