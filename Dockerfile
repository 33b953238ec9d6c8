# The serving image: the service only, without the training libraries (no [train] extra).
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
RUN pip install --no-cache-dir . && useradd --create-home reco && mkdir -p /data /models \
    && chown reco /data /models
USER reco

# Production sets REDIS_URL; without it the embedded Redis persists under DATA_DIR.
ENV HOST=0.0.0.0 PORT=8000 DATA_DIR=/data MODEL_DIR=/models LOG_LEVEL=INFO
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=2s CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health/live')"
CMD ["python", "-m", "service"]
