# gradserve as a container: a builder stage builds the wheel into a virtualenv, the runtime stage runs it
# as a non-root user. Dependencies come from ./wheelhouse, filled on the host by scripts/wheelhouse.sh, so
# the build needs no package index (docs/deploy.md). BASE is any image with python3 and its venv module:
# python:3.11-slim, or the local Debian base that scripts/container-test.sh makes with debootstrap.
ARG BASE=python:3.11-slim

FROM ${BASE} AS builder
WORKDIR /src
COPY . .
# --no-index: the wheelhouse holds every dependency and setuptools for the build backend.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip wheel --no-cache-dir --no-index --find-links wheelhouse --no-deps --wheel-dir /dist . \
    && /opt/venv/bin/pip install --no-cache-dir --no-index --find-links wheelhouse /dist/gradserve-*.whl

FROM ${BASE}
# A fixed numeric uid, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 gradserve \
    && useradd --system --uid 10001 --gid gradserve --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin gradserve
# The virtualenv points at the base's python3, which is why both stages use the same BASE.
COPY --from=builder /opt/venv /opt/venv
# Flags read GRADSERVE_* defaults, so `docker run -e GRADSERVE_PORT=...` moves the server and its health check.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GRADSERVE_HOST=0.0.0.0 \
    GRADSERVE_PORT=50051
USER 10001:10001
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["gradserve", "health"]
ENTRYPOINT ["gradserve"]
CMD ["serve"]
