# sftp-connector as a long-running container: `docker build -t sftp-connector .` (see deploy/README.md).
#
#   /srv/sftp-connector/connector.yaml   the connection (mount it read-only; the working directory)
#   /srv/sftp-connector/goals/           one goal per file              (volume, read-only is fine)
#   /srv/sftp-connector/keys/            SSH/PGP keys and the GnuPG home (volume, writable: gpg keeps its keyring here)
#   /srv/sftp-connector/state/           the SQLite store, temp and reject files (volume, writable)
FROM python:3.11-slim-bookworm

# No .pyc files in the image or the volumes; log lines reach `docker logs` as they are written.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# gpg + gpg-agent: python-gnupg drives the real gpg, and GnuPG 2 needs the agent for every private-key
# operation (without recommends, `gpg` alone does not bring it). openssh-client: ssh-keyscan for
# keys/known_hosts and ssh/sftp to check a partner server from inside the container. tini: PID 1, which
# reaps the gpg-agent processes gpg leaves behind as orphans (the entrypoint runs under it).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends gpg gpg-agent openssh-client tini \
 && rm -rf /var/lib/apt/lists/*

# Only what the package build needs (README.md is the project's readme); tests and state stay out. The
# dependencies are installed at the versions the test suite passed with (deploy/constraints.txt).
WORKDIR /build
COPY pyproject.toml README.md ./
COPY deploy/constraints.txt ./deploy/constraints.txt
COPY sftp_connector/ ./sftp_connector/
RUN pip install --no-cache-dir -c deploy/constraints.txt ".[postgres]" \
 && rm -rf /build

# A dedicated user with a fixed uid/gid, so host files and secrets can be chowned to 10001 before
# they are mounted (the connector refuses secret files not owned by the user running it).
RUN groupadd --system --gid 10001 sftpc \
 && useradd --system --uid 10001 --gid sftpc --home-dir /srv/sftp-connector --shell /usr/sbin/nologin sftpc \
 && mkdir -p /srv/sftp-connector/goals /srv/sftp-connector/keys /srv/sftp-connector/state \
 && chown -R sftpc:sftpc /srv/sftp-connector \
 && chmod 0700 /srv/sftp-connector/keys /srv/sftp-connector/state

# connector.yaml is read from the working directory; its relative paths (goals/, keys/, state/) resolve
# against its own directory, i.e. here.
WORKDIR /srv/sftp-connector
# Declared after the chown, so fresh named volumes start out owned by sftpc.
VOLUME ["/srv/sftp-connector/goals", "/srv/sftp-connector/keys", "/srv/sftp-connector/state"]

USER 10001:10001

# /healthz (200 when healthy) and /metrics (Prometheus) of `daemon --health-port`.
EXPOSE 9464
# slim has no curl: ask with Python. Any error or non-2xx status exits 1 (unhealthy).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]

# JSON log lines for the container's log driver. `docker run IMAGE run --dry-run` (or validate,
# history, …) replaces CMD for a one-off command with the same config and volumes.
# tini is PID 1: it forwards SIGTERM to the connector and reaps orphans (`docker run --init` is not needed).
ENTRYPOINT ["/usr/bin/tini", "--", "sftp-connector", "--log-format", "json"]
CMD ["daemon", "--health-port", "9464", "--health-host", "0.0.0.0"]
