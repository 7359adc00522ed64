# nexus-board-sync. Build from the repository root:
#   docker build -f deploy/docker/board-sync.Dockerfile -t nexus-board-sync .
# Targets: the default (last) stage is the production image; `dev` is the same image
# with the sources owned by the app user, so Tilt's live_update can sync into it.
ARG PYTHON_IMAGE=python:3.11-slim
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Behind a TLS-inspecting proxy, pass its CA bundle: --secret id=ca_bundle,src=<bundle> (never stored
# in a layer). Third-party dependencies alone first: this layer is rebuilt only when uv.lock changes.
RUN --mount=type=cache,target=/root/.cache/uv --mount=type=secret,id=ca_bundle \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    if [ -f /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle; fi; \
    uv sync --frozen --no-dev --no-install-workspace --package nexus-board-sync
COPY pyproject.toml uv.lock ./
COPY libs ./libs
COPY services/board-sync ./services/board-sync
RUN --mount=type=cache,target=/root/.cache/uv --mount=type=secret,id=ca_bundle \
    if [ -f /run/secrets/ca_bundle ]; then export SSL_CERT_FILE=/run/secrets/ca_bundle; fi; \
    uv sync --frozen --no-dev --package nexus-board-sync

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 nexus \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin nexus
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
# Root-owned code: the app user can read it, never change it.
COPY --from=build /app /app
USER 10001:10001
EXPOSE 9100
ENTRYPOINT ["nexus-board-sync"]

FROM runtime AS dev
USER 0:0
RUN chown 10001:10001 /app && chown -R 10001:10001 /app/libs /app/services
USER 10001:10001

FROM runtime
