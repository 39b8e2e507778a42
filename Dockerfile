# The focus-audit GPU worker: CUDA-enabled torch, the project, and a Prefect process worker.
#
#   docker build -t focus-audit-worker .
#   docker run --gpus '"device=0"' \
#       -e PREFECT_API_URL=http://prefect.example:4200/api \
#       -e FOCUS_DATABASE_URL=postgresql+psycopg://focus@db.example/focus \
#       focus-audit-worker
#
# One container per GPU. The same image serves the Docker and Kubernetes pools
# (deployments/work-pools/*.json), whose workers replace CMD with the flow-run command.
#
# A host with no registry builds it from a local base and a local wheel index (docs/operations.md, "The worker
# image without a registry"):
#   docker build --network host --build-arg BASE_IMAGE=focus-audit-base:bookworm \
#       --build-arg TORCH_INDEX_URL=http://127.0.0.1:8000/simple -t focus-audit-worker .
ARG PYTHON_VERSION=3.11
# Any Debian-like image whose `pip` installs system-wide for Python ${PYTHON_VERSION} (Docker Hub's by default).
ARG BASE_IMAGE=python:${PYTHON_VERSION}-slim
FROM ${BASE_IMAGE}

# CUDA wheels of torch: pick the index that matches the hosts' driver (cu126, cu128, cu130, ...), or a local
# index that serves the same pinned wheels and their dependencies.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg \
    DO_NOT_TRACK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    FOCUS_PROJECT_DIR=/opt/focus-audit

# torch and torchvision first, pinned as in the Makefile, from the CUDA index.
RUN pip install "torch==2.14.1" "torchvision==0.29.1" --index-url "${TORCH_INDEX_URL}"

WORKDIR /opt/focus-audit
COPY pyproject.toml README.md ./
COPY focus_core ./focus_core
COPY db ./db
COPY flows ./flows
COPY deployments ./deployments
# The project and its other dependencies (the torch pins above already satisfy pyproject's range), with the
# extras a worker of the pool needs: s3 (weights and checkpoints on s3://) and mlflow (models:/ weights).
RUN pip install ".[s3,mlflow]" \
    && useradd --create-home --uid 1000 focus \
    && chown -R focus /opt/focus-audit
USER focus

# Deployments' pull step changes to $FOCUS_PROJECT_DIR, where flows/*.py entrypoints resolve.
CMD ["prefect", "worker", "start", "--pool", "focus-gpu", "--type", "process", "--limit", "1"]
