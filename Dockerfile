# ngm: REST, MCP (/mcp) and dashboard on port 8000. State lives in /data (SQLite and the encryption key
# file) unless NGM_DATABASE_URL points at PostgreSQL and NGM_ENCRYPTION_KEYS holds the keys.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 NGM_DATA_DIR=/data
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY ngm ./ngm
# gcc only while installing: setup.py compiles the router's hot path (without it ngm runs that code as Python)
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && pip install . \
    && apt-get purge -y --auto-remove gcc libc6-dev && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data ngm && mkdir -p /data && chown ngm /data

USER ngm
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
# Inside a container the server must listen beyond loopback; publish the port deliberately.
CMD ["ngm", "serve", "--host", "0.0.0.0", "--port", "8000"]
