# resynth HTTP service on the embedded default model.
# The set-up is the README's `make setup` (venv, packages, offline perceptual weights) without the dev extras,
# then `resynth serve`.
FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends make \
 && rm -rf /var/lib/apt/lists/*

ENV TORCH_HOME=/app/.torch \
    RESYNTH_HOST=0.0.0.0 \
    RESYNTH_PORT=8000 \
    PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2

WORKDIR /app
COPY pyproject.toml Makefile README.md ./
COPY gan_inversion ./gan_inversion
COPY detector ./detector
COPY api ./api
COPY models ./models
# the second generator models/attribution_detector.json registers (RESYNTH_DETECTOR=models/attribution_detector.json)
COPY benchmarks/generators/stylegan2_narrow.pt ./benchmarks/generators/
# EXTRAS=ray (the compose file's `ray` profile) adds Ray and the PostgreSQL driver for distributed audits.
ARG EXTRAS=
RUN make setup EXTRAS=$EXTRAS

# No root process in the container.
RUN useradd --uid 10001 --create-home resynth && chown -R resynth:resynth /app
USER resynth

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["/app/.venv/bin/python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"]
CMD ["/app/.venv/bin/resynth", "serve"]
