# The image compose.yaml builds for the api and worker services.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev libgomp1 \
    && rm -rf /var/lib/apt/lists/* && pip install --no-cache-dir uv
WORKDIR /srv/model-ledger
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY app ./app
COPY domain ./domain
COPY workers ./workers
RUN uv sync --frozen --no-dev
ENV PATH="/srv/model-ledger/.venv/bin:$PATH" PYTHONUNBUFFERED=1
EXPOSE 8000
CMD ["model-ledger", "serve"]
