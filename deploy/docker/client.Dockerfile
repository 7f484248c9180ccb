# The orchestrator client: no torch, no GPU; talks gRPC to Triton servers.
#
#   docker build -f deploy/docker/client.Dockerfile -t virnucpro-client:0.1.0 .
#   docker run --rm -v $PWD/data:/data -v $PWD/artifacts:/artifacts:ro virnucpro-client:0.1.0 \
#       predict /data/reads.fa.gz -o /data/out --chunk-size 500 \
#       --classifier /artifacts/classifiers/500_model.pth --server gpu01:8001,gpu02:8001
FROM python:3.11-slim

COPY pyproject.toml README.md /tmp/virnucpro/
COPY orchestrator /tmp/virnucpro/orchestrator
COPY encoders /tmp/virnucpro/encoders
COPY export /tmp/virnucpro/export
# The base install only: numpy, tritonclient[grpc], safetensors, tqdm (the `models` extra with
# torch is not installed; the client never imports it).
RUN pip install --no-cache-dir /tmp/virnucpro && rm -rf /tmp/virnucpro

WORKDIR /data
ENTRYPOINT ["orchestrator"]
CMD ["--help"]
