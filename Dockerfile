# asgi-rotator: the gateway as a container.
#
#   docker build -t asgi-rotator .
#   docker run -p 8080:8080 -e GATEWAY_KEY=choose-one -e OPENAI_API_KEY=sk-... asgi-rotator
#
# Configuration, all optional:
#   * API keys: the standard variables (OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY, ...),
#     as in README.md "Real providers"; with none set it serves the built-in mock provider.
#   * A file: mount it and name it, e.g.
#       -v ./gateway.toml:/etc/asgi-rotator/gateway.toml:ro ... asgi-rotator --config /etc/asgi-rotator/gateway.toml
#   * Any setting from the environment: ASGI_ROTATOR__SECTION__KEY (README.md "Configuration"),
#     e.g. ASGI_ROTATOR__STATE__BACKEND=redis ASGI_ROTATOR__STATE__URL=redis://redis:6379/0.
#   * GATEWAY_KEY (required): the key clients must send.  The container listens on 0.0.0.0,
#     and the gateway refuses a non-loopback address without inbound keys.
#   * Options of `asgi-rotator serve` go after the image name: --workers 4 --log-format json
#     --log-level info --access-log.
# /healthz (liveness) and /readyz (readiness) need no key.

FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY asgi_rotator ./asgi_rotator
# serve: uvicorn and aiohttp; redis: the shared state store (compose.yaml).
RUN pip install ".[serve,redis]"

# A system user with no shell and no home: the server needs to write nothing but the file
# state store's directory, which is its own.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin rotator \
    && mkdir -p /etc/asgi-rotator /var/lib/asgi-rotator \
    && chown rotator /var/lib/asgi-rotator
USER rotator

ENV ASGI_ROTATOR__SERVER__HOST=0.0.0.0 \
    ASGI_ROTATOR__SERVER__PORT=8080 \
    ASGI_ROTATOR__SERVER__INBOUND_KEYS='["env:GATEWAY_KEY"]'
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

ENTRYPOINT ["asgi-rotator", "serve"]
