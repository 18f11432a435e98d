# The hub in a container: docker build -t aftersales-hub . ; with PostgreSQL: docker compose up
# (compose.yaml). Config in /etc/hub (mount your own over it), state in /var/lib/hub.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/hub
COPY pyproject.toml README.md ./
COPY hub ./hub
COPY connectors ./connectors
RUN pip install . && useradd --system --home-dir /var/lib/hub --create-home hub
COPY mappings /etc/hub/mappings
COPY compose.config.yaml /etc/hub/config.yaml

USER hub
WORKDIR /var/lib/hub
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status != 200)"
# SIGTERM drains (finishes what is in flight) and exits 0; give it the time.
STOPSIGNAL SIGTERM
CMD ["hub", "run", "-c", "/etc/hub/config.yaml"]
