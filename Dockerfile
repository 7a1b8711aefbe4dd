# Image for compose.yaml: one image, the command picks the role (serve, worker, beat, migrate).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY statusd ./statusd
COPY migrations ./migrations
RUN pip install --no-cache-dir -e . && useradd --system --uid 10001 statusd
USER statusd
EXPOSE 8080
CMD ["statusd", "serve"]
