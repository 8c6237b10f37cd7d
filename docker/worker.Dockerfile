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
COPY app ./app
COPY worker ./worker
# The base image's torch satisfies the requirement and is kept; the CLIP vocabulary ships in open_clip's wheel
# (installed without its dependencies, which would replace torch).
RUN python -c "import sys; assert sys.version_info >= (3, 11), sys.version" \
 && pip install . \
 && pip install --no-deps "open_clip_torch==3.3.0" \
 && python -c "import torch, diffusers, worker.jobs; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
 && useradd --system --uid 10001 --home /data erasepro \
 && mkdir -p /data /models/hf-cache && chown -R erasepro /data /models

USER erasepro
# SIGTERM: finish the running job, then exit (a second SIGTERM interrupts it; the job is recorded as failed).
STOPSIGNAL SIGTERM
CMD ["erasepro", "worker", "--queues", "erase,generate"]
