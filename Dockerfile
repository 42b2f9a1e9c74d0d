# The connector as a service: `connector watch` on /srv/connector.
#   docker build -t connector .
#   docker compose --profile live up -d        (see docs/watch.md)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed, unprivileged uid: give bind-mounted folders to it (chown 10001).
RUN groupadd --system --gid 10001 connector \
 && useradd --system --uid 10001 --gid connector --home-dir /srv/connector --shell /usr/sbin/nologin connector

WORKDIR /build
COPY pyproject.toml README.md ./
COPY connector ./connector
RUN pip install . && rm -rf /build

WORKDIR /srv/connector
COPY mappings ./mappings
COPY deploy/docker/connector.yaml ./connector.yaml
# The drop folders share one volume (drop/) so the claim and archive renames stay atomic;
# state/ (ledger, lock, health) is its own volume on local disk. Created here, owned by the
# service user, so new named volumes start with the right owner and modes.
RUN mkdir -p drop/inbox drop/processing drop/archive drop/failed state \
 && chown -R connector:connector drop state \
 && chmod 0700 state

USER connector
VOLUME ["/srv/connector/drop", "/srv/connector/state"]

# Healthy when the health file says "ok" and was written in the last 3 minutes.
HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=3 \
  CMD ["python", "-m", "connector.health", "/srv/connector/state/health.json", "180"]

# SIGTERM: the current request finishes (or is left to the ledger) and the process exits within 10 s.
STOPSIGNAL SIGTERM
CMD ["connector", "watch"]
