# The gateway image: the `jurisgate` package and its shipped policies, without TensorFlow
# (the gateway never imports it; the model server runs in its own container).
# Dependencies are installed at the exact versions of constraints.txt (reproducible builds).
# `docker build .` builds the gateway (the last stage); `--target trainer` the one-shot
# trainer docker-compose.yml runs to fill the model volume.

FROM python:3.11-slim AS trainer
ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONPATH=/src TF_CPP_MIN_LOG_LEVEL=3 HOME=/tmp
WORKDIR /src
# Installed when the image is built, at fixed versions, never at container start.
RUN pip install "tensorflow==2.21.0" "scikit-learn==1.9.1" "pillow==13.0.0" "numpy==2.4.6" \
    && groupadd --system --gid 10001 trainer \
    && useradd --system --uid 10001 --gid 10001 --no-create-home trainer \
    && mkdir -p /models && chown 10001:10001 /models
COPY model_server ./model_server
USER 10001:10001

FROM python:3.11-slim AS gateway
ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/jurisgate
COPY pyproject.toml README.md constraints.txt ./
COPY gateway ./gateway
COPY model_server ./model_server
COPY policies ./policies
# A numeric user: Kubernetes' `runAsNonRoot` can only verify a number.
RUN pip install -c constraints.txt . \
    && groupadd --system --gid 10001 jurisgate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/jurisgate --no-create-home \
       jurisgate \
    && mkdir -p /var/lib/jurisgate/audit && chown -R 10001:10001 /var/lib/jurisgate
USER 10001:10001
EXPOSE 8501 8500 8601
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=6 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/healthz', timeout=2)"]
ENTRYPOINT ["jurisgate"]
CMD ["serve", "--config", "/etc/jurisgate/jurisgate.yaml", "--log-format", "json"]
