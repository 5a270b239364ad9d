# syntax=docker/dockerfile:1
#
# One image for all three processes; the Helm chart picks the command per container:
#   hotswap-server    inference server (data plane :8080, admin plane 127.0.0.1:8081)
#   hotswap-agent     sidecar (:9090); never imports torch
#   hotswap-operator  kopf operator
#
# CPU build (default):
#   docker build -t reranker-hotswap:0.1.0 .
# CUDA build (torch wheels bundle the CUDA runtime; the node needs only the NVIDIA driver):
#   docker build -t reranker-hotswap:0.1.0-cu128 \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtualenv with torch and the project, nothing else carried over ----
FROM ${PYTHON_IMAGE} AS build

# Which torch build: the CPU index by default, a CUDA index (cu126, cu128, ...) for GPUs.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Which torch version; keep it in step with the Makefile's TORCH_SPEC.
ARG TORCH_SPEC=torch==2.13.0

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# torch first, from the chosen index, so `pip install .` finds it satisfied and never pulls
# another build from PyPI.
RUN pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}"

WORKDIR /src
COPY . .
# A regular (non-editable) install: the final stage gets no source tree.
RUN pip install ".[tracing]" \
 && python -m compileall -q /opt/venv/lib

# ---- final: the runtime only, no compilers, no pip cache, no source ----
FROM ${PYTHON_IMAGE} AS final

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HOME=/tmp/huggingface

# A fixed, unprivileged uid/gid (the chart's podSecurity defaults); no shell login, no home.
RUN groupadd --system --gid 10001 hotswap \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin hotswap \
 && mkdir -p /models \
 && chown 10001:10001 /models

COPY --from=build /opt/venv /opt/venv

USER 10001:10001
WORKDIR /tmp
EXPOSE 8080 9090
CMD ["hotswap-server"]
