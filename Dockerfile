# Standalone image of the Wyoming OpenAI proxy, built from this checkout's app/.
#   docker build -t wyoming-openai .
#   docker run -p 10300:10300 -e OPENAI_API_KEY=... wyoming-openai
# Every option is an environment variable (see docs/deploy.md and --help).
FROM python:3.12-slim AS build

WORKDIR /src
COPY app/ ./app/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir ./app

FROM python:3.12-slim

COPY --from=build /opt/venv /opt/venv
# Answers whether the server replies to a Wyoming "describe" (HEALTHCHECK).
COPY wyoming_openai/rootfs/usr/local/bin/wyoming-ready /usr/local/bin/wyoming-ready

RUN useradd --system --uid 10300 --user-group --no-create-home \
        --shell /usr/sbin/nologin wyoming

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    WYOMING_URI=tcp://0.0.0.0:10300

USER 10300:10300
EXPOSE 10300/tcp

HEALTHCHECK --start-period=30s --interval=30s --timeout=10s \
    CMD ["/usr/local/bin/wyoming-ready", "127.0.0.1:10300"]

ENTRYPOINT ["wyoming-openai"]
