# The gateway image: the `jurisgate` package and its shipped policies, without TensorFlow
# (the gateway never imports it; the model server runs in its own container).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/jurisgate
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY model_server ./model_server
COPY policies ./policies
RUN pip install . && useradd --system --home /var/lib/jurisgate jurisgate \
    && mkdir -p /var/lib/jurisgate && chown jurisgate /var/lib/jurisgate
USER jurisgate
EXPOSE 8501 8500 8601
ENTRYPOINT ["jurisgate"]
CMD ["serve", "--config", "/etc/jurisgate/jurisgate.yaml"]
