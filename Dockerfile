# The flagops operator image: non-root, no shell tools beyond the slim base, read-only root.
# Not built in CI (no Docker engine there); see README "Container image".
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY operator/ operator/
RUN python -m venv /opt/flagops \
 && /opt/flagops/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/flagops/bin/pip install --no-cache-dir -c constraints.txt .

FROM python:3.11.14-slim-bookworm
ENV PATH=/opt/flagops/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/flagops /opt/flagops
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["flagops"]
CMD ["run"]
