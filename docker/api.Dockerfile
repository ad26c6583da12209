# The API alone: no torch, no GPU. Workers run from worker.Dockerfile.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY src ./src
RUN pip install --no-cache-dir .
ENV GEOTRAIN_HOME=/srv/geotrain
EXPOSE 8000
CMD ["geotrain", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "0"]
