# ErasePro API image: FastAPI + uvicorn, no torch (the API never imports it).
#   docker build -f docker/api.Dockerfile -t erasepro-api .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ERASEPRO_DATA_DIR=/data

WORKDIR /opt/erasepro
COPY pyproject.toml README.md ./
COPY erasepro_core ./erasepro_core
COPY erasepro_jobs ./erasepro_jobs
COPY app ./app
COPY worker ./worker
# The `api` extra (pyproject.toml) is exactly what the API process imports: no torch.
RUN pip install ".[api]" \
 && python -c "import sys, app.main; assert 'torch' not in sys.modules" \
 && ! python -c "import torch" 2>/dev/null \
 && useradd --system --uid 10001 --home /data erasepro \
 && mkdir -p /data && chown erasepro /data

USER erasepro
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"
# REDIS_URL must be set (the compose file does): this is a plain API process, workers run elsewhere.
# The guarded HTTP protocol drops clients that are too slow sending their request headers (docs/service.md).
# Several uvicorn processes share one Prometheus multiprocess folder (emptied at each start: app/metrics.py).
CMD ["sh", "-c", "rm -rf /tmp/erasepro-metrics && mkdir -p /tmp/erasepro-metrics && export PROMETHEUS_MULTIPROC_DIR=/tmp/erasepro-metrics && exec uvicorn app.main:app --host 0.0.0.0 --port 8000 --workers ${API_WORKERS:-2} --proxy-headers --http app.http_guard:GuardedH11Protocol"]
