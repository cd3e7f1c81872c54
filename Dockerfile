# The flagops operator image: non-root, no shell tools beyond the slim base, read-only root.
# BASE: any Debian-based image with Python 3.11+ and venv. `make image` passes one made on
# the local machine (hack/image/build.sh), since no registry is reachable there.
ARG BASE=python:3.11.14-slim-bookworm

FROM ${BASE} AS build
WORKDIR /src
# Dependencies first, in a layer of their own: a change to the code alone reuses it.
COPY pyproject.toml constraints.txt ./
RUN python -m venv /opt/flagops \
 && /opt/flagops/bin/pip install --no-cache-dir --upgrade pip \
 && python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
    > requirements.txt \
 && /opt/flagops/bin/pip install --no-cache-dir -c constraints.txt -r requirements.txt
COPY README.md ./
COPY operator/ operator/
RUN /opt/flagops/bin/pip install --no-cache-dir --no-deps .

FROM ${BASE}
ENV PATH=/opt/flagops/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /opt/flagops /opt/flagops
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["flagops"]
CMD ["run"]
