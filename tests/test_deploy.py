"""Production: `check --deploy` is clean, DEBUG-off refuses to start keyless, every setting
is documented, and the image, compose.yaml, gunicorn and systemd files hold together
(docs/deploy.md). Docker itself is not needed: the suite never builds the image."""

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    # Variables the test run itself sets (DJANGO_ALLOW_ASYNC_UNSAFE for the browser tests)
    # are not part of a production environment.
    dropped = ("DEBUG", "SECRET_KEY", "DJANGO_ALLOW_ASYNC_UNSAFE")
    clean_env = {k: v for k, v in os.environ.items() if k not in dropped}
    clean_env.update(DJANGO_SETTINGS_MODULE="config.settings", **env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY="a-long-random-production-secret-" + "x" * 40,
        ALLOWED_HOSTS="closeloop.example.com",
        DATA_DIR=str(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_to_start_without_secret_key(tmp_path):
    result = _manage("check", DATA_DIR=str(tmp_path))
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_check_deploy_is_clean_with_the_compose_environment(tmp_path):
    """The settings compose.yaml gives every Closeloop container, Redis broker included."""
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        SECRET_KEY="a-long-random-production-secret-" + "x" * 40,
        ALLOWED_HOSTS="closeloop.example.com",
        DATA_DIR=str(tmp_path),
        DATABASE_URL="",
        Q_BROKER="redis",
        REDIS_URL="redis://redis:6379/0",
        Q_SCHEDULER="0",
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- every setting is documented -------------------------------------------------------------

# A variable read: os.environ.get("X"), os.environ["X"], os.getenv("X"), env_int("X", …) …
ENV_READ = re.compile(
    r"""(?:os\.environ\.get|os\.getenv|env_int|env_bool|env_list)\(\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""|os\.environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]"""
)
# Read by the code that starts and checks the processes, beside the settings themselves.
READERS = ("config/settings.py", "config/gunicorn.py", "deploy/healthcheck.py")


def variables_read(path: Path) -> set[str]:
    return {a or b for a, b in ENV_READ.findall(path.read_text())}


def documented() -> set[str]:
    text = (ROOT / "docs" / "configuration.md").read_text()
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", text, flags=re.MULTILINE))


def test_every_variable_the_product_reads_is_in_docs_configuration():
    read = set().union(*(variables_read(ROOT / path) for path in READERS))
    assert {"SECRET_KEY", "DATABASE_URL", "Q_BROKER", "WEB_CONCURRENCY"} <= read  # the grep works
    assert sorted(read - documented()) == []


def test_every_variable_compose_sets_for_closeloop_is_documented():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    ours = {name for name, service in compose["services"].items() if "build" in service}
    set_there = set().union(*(compose["services"][name]["environment"] for name in ours))
    assert sorted(set_there - documented()) == []


# --- the image and compose.yaml --------------------------------------------------------------


def test_compose_runs_web_worker_scheduler_postgres_redis_after_one_migrate():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {"web", "worker", "scheduler", "postgres", "redis", "migrate"} <= set(services)
    assert services["postgres"]["image"] == "postgres:15"
    assert services["redis"]["image"] == "redis:7"
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert services["web"]["command"][0] == "gunicorn"
    for name in ("worker", "scheduler"):
        assert services[name]["command"] == ["python", "manage.py", "qcluster"]
    # One scheduler; the scalable workers leave the schedules to it.
    assert services["worker"]["environment"]["Q_SCHEDULER"] == "0"
    assert services["scheduler"]["environment"]["Q_SCHEDULER"] == "1"
    for name in ("web", "worker", "scheduler"):
        service = services[name]
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        env = service["environment"]
        assert env["Q_BROKER"] == "redis"
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert (
            env["DATABASE_URL"].startswith("postgres://")
            and "@postgres:5432/" in env["DATABASE_URL"]
        )
        assert {"SECRET_KEY", "ALLOWED_HOSTS"} <= set(env)
    for name in ("web", "worker", "scheduler", "postgres", "redis"):
        assert services[name]["healthcheck"]["test"], name
    # The health checks run files the image has.
    for name in ("web", "worker"):
        script = services[name]["healthcheck"]["test"][-1]
        assert (ROOT / script).is_file(), script


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker CLI")
def test_docker_compose_config_accepts_the_file():
    result = subprocess.run(
        ["docker", "compose", "--profile", "demo", "config", "--quiet"],
        cwd=ROOT,
        env={**os.environ, "SECRET_KEY": "x" * 50, "FIELD_ENCRYPTION_KEYS": "k" * 44},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "unknown command" in result.stderr or "is not a docker command" in result.stderr:
        pytest.skip("needs the docker compose plugin")
    assert result.returncode == 0, result.stderr


def test_the_image_runs_as_a_user_collects_static_files_and_serves_with_gunicorn():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, flags=re.MULTILINE)
    [user] = re.findall(r"^USER (\S+)$", dockerfile, flags=re.MULTILINE)
    assert user.split(":")[0] not in {"root", "0"}
    assert "manage.py collectstatic --noinput" in dockerfile
    assert "pip install" in dockerfile and "pyproject.toml" in dockerfile
    assert 'CMD ["gunicorn", "--config", "python:config.gunicorn", "config.wsgi"]' in dockerfile
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(dependency.startswith("gunicorn==") for dependency in dependencies)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "var", ".env", ".git"} <= set(ignored)


GUNICORN = [sys.executable, "-m", "gunicorn", "--config", "python:config.gunicorn"]


def test_gunicorn_takes_its_worker_count_and_threads_from_the_environment():
    result = subprocess.run(
        [*GUNICORN, "--print-config", "config.wsgi"],
        cwd=ROOT,
        env={**os.environ, "WEB_CONCURRENCY": "5", "GUNICORN_THREADS": "3"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    shown = dict(
        (name.strip(), value.strip())
        for name, _, value in (line.partition("=") for line in result.stdout.splitlines())
    )
    assert (shown["workers"], shown["threads"]) == ("5", "3")
    assert shown["control_socket_disable"] == "True"


@pytest.mark.parametrize(
    ("allowed_hosts", "host"),
    [
        ("closeloop.example.com,localhost", "closeloop.example.com"),
        (".example.com", "example.com"),
        ("*", "localhost"),
        ("", "localhost"),
    ],
)
def test_the_container_health_check_asks_with_a_host_django_accepts(allowed_hosts, host):
    from deploy.healthcheck import probe_host

    assert probe_host(allowed_hosts) == host


def test_the_systemd_units_start_gunicorn_and_qcluster_from_the_virtualenv():
    web = (ROOT / "deploy/systemd/closeloop-web.service").read_text()
    worker = (ROOT / "deploy/systemd/closeloop-worker.service").read_text()
    assert "ExecStart=/srv/closeloop/venv/bin/gunicorn --config python:config.gunicorn" in web
    assert "ExecStart=/srv/closeloop/venv/bin/python manage.py qcluster" in worker
    for unit in (web, worker):
        assert "User=closeloop" in unit
        assert "EnvironmentFile=/etc/closeloop/closeloop.env" in unit
