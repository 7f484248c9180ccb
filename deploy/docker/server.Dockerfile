# Triton with the VirNucPro encoders resident: NVIDIA's image + our encoder package and its Python
# dependencies, installed here at build time, so a GPU node without internet can start it.
#
#   docker build -f deploy/docker/server.Dockerfile -t virnucpro-triton:0.1.0 .
#   docker run --gpus all --shm-size 16g -p 8001:8001 -p 8002:8002 -e VIRNUCPRO_ADMIN_KEY \
#       -v $PWD/artifacts/model_repository:/models:ro virnucpro-triton:0.1.0
#
# Locked down: the entry point starts tritonserver with the model-repository, shared-memory,
# logging and trace protocols (gRPC and HTTP) refused unless a request carries the admin header
# with $VIRNUCPRO_ADMIN_KEY (unset: refused to everyone); see orchestrator/embed/triton/lockdown.py.
#
# The model repository (configs + weights from `python -m export ...`) is mounted at /models. To
# ship it inside the image instead (one artifact to copy to an air-gapped cluster), build the
# `baked` target: `--target baked --build-arg MODEL_REPOSITORY=artifacts/model_repository`.
ARG TRITON_VERSION=24.10
FROM nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-pyt-python-py3 AS server

# The image provides CUDA torch and numpy for the Python backend; model.py imports `encoders`,
# which needs the tokenizers library (DNABERT-S) and fair-esm (ESM-2 checkpoints).
RUN pip install --no-cache-dir "tokenizers>=0.20,<1" "fair-esm==2.0.0"
COPY pyproject.toml README.md /opt/virnucpro/
COPY encoders /opt/virnucpro/encoders
COPY orchestrator /opt/virnucpro/orchestrator
COPY export /opt/virnucpro/export
# --no-deps: torch stays the image's CUDA build (our pin is the CPU build for the tests).
RUN pip install --no-cache-dir --no-deps /opt/virnucpro && rm -rf /opt/virnucpro

EXPOSE 8000 8001 8002
ENTRYPOINT ["python3", "-m", "orchestrator.embed.triton.lockdown"]
CMD ["--model-repository=/models", "--model-config-name=gpu", "--disable-auto-complete-config", \
     "--allow-gpu-metrics=true"]

FROM server AS baked
ARG MODEL_REPOSITORY=artifacts/model_repository
COPY ${MODEL_REPOSITORY} /models
