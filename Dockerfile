# Closeloop's image: one image for every role. compose.yaml (and docs/deploy.md) run it as
# the web server (the default command: gunicorn), a job worker (`python manage.py qcluster`)
# and the one-off `python manage.py migrate`.

# --- build: the dependencies from pyproject.toml, in a virtualenv copied out whole -------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# The pinned dependencies first, read from pyproject.toml, in a layer of their own: a change
# to the code alone does not reinstall them. Each ships a manylinux wheel: no compiler here.
COPY pyproject.toml ./
RUN python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
    && /opt/venv/bin/pip install --requirement /tmp/requirements.txt
COPY . .
RUN /opt/venv/bin/pip install --no-deps .

# --- run -----------------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=config.settings \
    DATA_DIR=/data
RUN groupadd --system --gid 10001 closeloop \
    && useradd --system --uid 10001 --gid closeloop --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin closeloop
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The code stays root's and read-only to the service; it runs from here (templates, static
# and workflows live beside the packages), the virtualenv brings the dependencies.
COPY . .
# Static files are collected and compressed once, here, with production settings (DEBUG
# off: hashed names for whitenoise's manifest storage). The key exists for this step only;
# the containers get theirs from the environment and refuse to start without one.
RUN SECRET_KEY=collectstatic-at-build-time-only DATA_DIR=/tmp/build \
        python manage.py collectstatic --noinput --verbosity 0 \
    && rm -rf /tmp/build \
    && mkdir -p /data \
    && chown closeloop:closeloop /data
# Numeric, so an orchestrator can verify it is not root without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000
# The web server's check; compose.yaml gives the worker roles theirs (deploy/).
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["python", "deploy/healthcheck.py"]
CMD ["gunicorn", "--config", "python:config.gunicorn", "config.wsgi"]
