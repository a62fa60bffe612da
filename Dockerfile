# chuyende: one image for every replica. Build: docker build -t chuyende .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first, so a content or code change does not reinstall them.
COPY pyproject.toml README.md ./
COPY bot bot
COPY handlers handlers
COPY scheduler scheduler
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app chuyende
# Campaigns and templates are data: they live beside the code, not inside site-packages.
COPY content content

ENV CHUYENDE_CONTENT_DIR=/app/content \
    CHUYENDE_WEBHOOK_LISTEN=0.0.0.0 \
    CHUYENDE_WEBHOOK_PORT=8443 \
    CHUYENDE_TIMEZONE=Asia/Ho_Chi_Minh \
    CHUYENDE_LOCALE=vi

USER chuyende
EXPOSE 8443
# /healthz answers 503 when the database is unreachable, so the orchestrator restarts us.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8443/healthz', timeout=4)"

# SIGTERM stops taking updates, finishes those in flight and flushes the outbox.
STOPSIGNAL SIGTERM
ENTRYPOINT ["chuyende"]
CMD ["run"]
