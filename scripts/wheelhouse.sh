#!/usr/bin/env bash
# Fill ./wheelhouse with binary wheels of gradserve's dependencies (and its build backend) for the image's
# Python, so that `docker build` installs with --no-index and never reaches a package index itself.
#   PYTHON          python whose pip downloads (default: python3)
#   PYTHON_VERSION  the BASE image's Python (default: 3.11)
#   GLIBC           the newest manylinux glibc the BASE accepts (default: 2_36, Debian bookworm)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
GLIBC=${GLIBC:-2_36}
ARCH=$(uname -m)
abi="cp${PYTHON_VERSION/./}"

# One source of truth: the runtime dependencies and the build requirements listed in pyproject.toml.
requirements=$(mktemp)
trap 'rm -f "$requirements"' EXIT
"$PYTHON" - >"$requirements" <<'EOF'
import tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)
print("\n".join(project["build-system"]["requires"] + project["project"]["dependencies"]))
EOF

# --platform/--python-version pick wheels for the image, not for this host, so a host with another Python
# still fills a usable wheelhouse. pip takes platform tags literally: list every glibc up to the base's,
# and the legacy aliases that some wheels carry alone (protobuf's cp310-abi3-manylinux2014).
platforms=(--platform "manylinux1_${ARCH}" --platform "manylinux2010_${ARCH}" --platform "manylinux2014_${ARCH}")
for minor in $(seq 5 "${GLIBC#2_}"); do
    platforms+=(--platform "manylinux_2_${minor}_${ARCH}")
done

mkdir -p wheelhouse
"$PYTHON" -m pip download --quiet --dest wheelhouse --only-binary=:all: \
    --python-version "$PYTHON_VERSION" --implementation cp --abi "$abi" --abi abi3 --abi none \
    "${platforms[@]}" --platform any --requirement "$requirements"
echo "wheelhouse: $(find wheelhouse -name '*.whl' | wc -l) wheels for CPython $PYTHON_VERSION on ${ARCH}" >&2
