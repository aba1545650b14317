#!/usr/bin/env bash
# Builds the images the container tests and benchmark use, without any registry:
#  - capecontrol/test-agent:dev  FROM scratch + the statically linked demo agent
#                                (capecontrol-exec/examples/container_agent.rs) at /agent;
#  - capecontrol/busybox:dev     FROM scratch + Debian's busybox-static, for hostile workloads.
# Idempotent and quick when the images are up to date (each carries the hash of its binary).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-gnu
STATIC_DIR=${CAPECONTROL_STATIC_TARGET:-$PWD/target/static}

# image_is_current IMAGE HASH: whether IMAGE exists and carries capecontrol.hash=HASH.
image_is_current() {
  local have
  have=$(docker image inspect -f '{{ index .Config.Labels "capecontrol.hash" }}' "$1" 2>/dev/null || true)
  [ "$have" = "$2" ]
}

# pack IMAGE BINARY PATH_IN_IMAGE [extra Dockerfile lines]: a FROM scratch image with BINARY.
pack() {
  local image=$1 binary=$2 dest=$3 extra=${4:-} hash ctx
  hash=$(sha256sum "$binary" | cut -d' ' -f1)
  if image_is_current "$image" "$hash"; then
    echo "build-test-images: $image is up to date"
    return
  fi
  ctx=$(mktemp -d)
  trap 'rm -rf "$ctx"' RETURN
  cp "$binary" "$ctx/bin"
  {
    echo "FROM scratch"
    echo "COPY bin $dest"
    [ -n "$extra" ] && echo "$extra"
    echo "LABEL capecontrol.hash=$hash"
  } > "$ctx/Dockerfile"
  DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" >/dev/null 2>"$ctx/err" || { cat "$ctx/err" >&2; exit 1; }
  echo "build-test-images: built $image"
}

if ! docker info >/dev/null 2>&1; then
  echo "build-test-images: the Docker engine is unreachable" >&2
  exit 1
fi

# (a) The static demo agent.
rustup target list --installed 2>/dev/null | grep -qx "$TARGET" || rustup target add "$TARGET"
CARGO_PROFILE_DEV_DEBUG=0 RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR="$STATIC_DIR" \
  cargo build --quiet -p capecontrol-exec --example container_agent --target "$TARGET"
pack capecontrol/test-agent:dev "$STATIC_DIR/$TARGET/debug/examples/container_agent" /agent \
  'ENTRYPOINT ["/agent"]'

# (b) busybox for hostile workloads.
if ! dpkg -s busybox-static >/dev/null 2>&1 || [ ! -x /bin/busybox ]; then
  apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq busybox-static >/dev/null
fi
pack capecontrol/busybox:dev /bin/busybox /bin/busybox \
  'RUN ["/bin/busybox", "--install", "-s", "/bin"]'
