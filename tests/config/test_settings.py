"""Settings this area reads refuse a value they cannot use, at startup, naming it."""

from __future__ import annotations

import pytest

from tests.test_deploy import _manage


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"API_RATE_LIMIT": "lots"}, "API_RATE_LIMIT must look like 600/minute"),
        ({"API_RATE_LIMIT": "600/fortnight"}, "API_RATE_LIMIT must look like 600/minute"),
        (
            {"WEBHOOK_TIMEOUT_SECONDS": "30", "WEBHOOK_LEASE_SECONDS": "20"},
            "WEBHOOK_LEASE_SECONDS must be longer than WEBHOOK_TIMEOUT_SECONDS",
        ),
    ],
)
def test_a_bad_value_stops_startup(tmp_path, env, message):
    result = _manage("check", SECRET_KEY="s" * 50, DATA_DIR=str(tmp_path), **env)
    assert result.returncode != 0
    assert message in result.stderr
