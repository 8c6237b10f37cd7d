# ErasePro CUDA worker image: torch with CUDA, diffusers, the RQ worker (erasepro worker).
#   docker build -f docker/worker.Dockerfile -t erasepro-worker .
# Any CUDA PyTorch image with Python >= 3.11 works as the base.
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ERASEPRO_DATA_DIR=/data \
    HF_HOME=/models/hf-cache

WORKDIR /opt/erasepro
COPY pyproject.toml README.md ./
COPY erasepro_core ./erasepro_core
COPY erasepro_jobs ./erasepro_jobs
COPY app ./app
COPY worker ./worker
# The `worker` extra (pyproject.toml); the base image's torch satisfies its requirement and is kept.
RUN python -c "import sys; assert sys.version_info >= (3, 11), sys.version" \
 && pip install ".[worker]" \
 && python -c "import torch, diffusers, worker.jobs; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
 && useradd --system --uid 10001 --home /data erasepro \
 && mkdir -p /data /models/hf-cache && chown -R erasepro /data /models

USER erasepro
# SIGTERM: finish the running job, then exit (a second SIGTERM interrupts it; the job is recorded as failed).
STOPSIGNAL SIGTERM
CMD ["erasepro", "worker", "--queues", "erase,generate,webhooks"]
