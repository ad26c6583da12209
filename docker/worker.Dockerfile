# A training worker. The torch wheels carry their CUDA libraries; the host needs an NVIDIA driver and
# the NVIDIA container toolkit (compose requests the GPU).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY src ./src
RUN pip install --no-cache-dir ".[train]"
ENV GEOTRAIN_HOME=/srv/geotrain
CMD ["geotrain", "worker"]
