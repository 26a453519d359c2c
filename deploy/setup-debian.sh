#!/usr/bin/env bash
# Installs what Kiln needs on Debian 12 (bookworm), only where it is missing. Idempotent.
#   deploy/setup-debian.sh          build and run dependencies
#   deploy/setup-debian.sh --test   also PostgreSQL (started, reachable on 127.0.0.1:5432),
#                                   redis-server (tests start their own on loopback ports) and
#                                   s3s-fs, a real S3 server for the storage and fleet tests,
#                                   Debian's chromium and hls.js (npm) for the browser test
set -euo pipefail

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"

packages=(ffmpeg libavcodec-dev libavformat-dev libavfilter-dev libavdevice-dev libswscale-dev
          libswresample-dev libavutil-dev pkg-config clang libclang-dev mesa-vulkan-drivers
          libheif-dev libturbojpeg0-dev liblcms2-dev curl meson ninja-build nasm xxd
          fonts-dejavu-core)
# fonts-dejavu-core: the font libass finds through fontconfig for burned-in subtitles.
# libvips-tools is the image benchmark's peer (kiln-bench image) and wrk the load generator of
# deploy/load-convert.sh; neither is a dependency of Kiln.
[ "${KILN_BENCH:-0}" = 1 ] && packages+=(libvips-tools wrk)
[ "$want_test" = 1 ] && packages+=(postgresql postgresql-client redis-server redis-tools chromium)
[ "$want_test" = 1 ] && ! python3 -m venv --help >/dev/null 2>&1 && packages+=(python3 python3-venv)
# npm builds the web console (control-plane/build.rs) and installs the browser tests' tools.
! command -v npm >/dev/null 2>&1 && packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "Rust is missing: install it with rustup (https://rustup.rs), Rust 1.85 or newer." >&2
  exit 1
fi

# libvmaf 2.3.1 (VMAF, PSNR and SSIM for the node's target-quality encodes and kiln-bench tune):
# Debian bookworm packages none, so it is built from the source the libvmaf-sys 0.4.4 crate
# vendors (checked by hash), static, with its standard models compiled in, plus the reference
# `vmaf` CLI. gpu-node's build.rs links it from here (or from $KILN_LIBVMAF_DIR).
vmaf_prefix="${KILN_LIBVMAF_DIR:-${HOME}/.cache/kiln/tools/libvmaf-2.3.1}"
if [ ! -f "$vmaf_prefix/lib/libvmaf.a" ] || [ ! -x "$vmaf_prefix/bin/vmaf" ]; then
  echo "==> building libvmaf 2.3.1 into $vmaf_prefix"
  src=$(mktemp -d)
  # The crate is fetched by cargo itself (a throwaway manifest that depends on it), then
  # checked by hash: no download address in this script.
  mkdir -p "$src/fetch/src"
  printf '[package]\nname = "kiln-vmaf-source"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\nlibvmaf-sys = "=0.4.4"\n' \
    > "$src/fetch/Cargo.toml"
  : > "$src/fetch/src/lib.rs"
  (cd "$src/fetch" && cargo fetch --quiet)
  crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/libvmaf-sys-0.4.4.crate | head -n1)
  cp "$crate" "$src/libvmaf.crate"
  echo "8b053ec5f32c6ba5ae9a51d2bbef0abd35e34033ad83c7b331bfec3e04df79a6  $src/libvmaf.crate" \
    | sha256sum -c --quiet
  tar xzf "$src/libvmaf.crate" -C "$src"
  meson setup "$src/build" "$src/libvmaf-sys-0.4.4/vmaf/libvmaf" --prefix="$vmaf_prefix" \
    --libdir=lib --buildtype=release -Ddefault_library=static -Denable_tests=false \
    -Denable_docs=false -Dbuilt_in_models=true >/dev/null
  ninja -C "$src/build" install >/dev/null
  rm -rf "$src"
fi

if [ "$want_test" = 1 ]; then
  # s3s-fs (an S3 server over a folder that enforces SigV4) for the S3 tests; built once and
  # cached outside the clone (~4 min on 2 cores). The tests look for it here.
  tools="${HOME}/.cache/kiln/tools"
  if [ ! -x "$tools/bin/s3s-fs" ]; then
    echo "==> installing s3s-fs into $tools"
    cargo install s3s-fs@0.14.1 --locked --features binary --root "$tools" --quiet
  fi
  # schemathesis (PyPI), the API suite's schema fuzzer, in a virtual environment of its own
  # beside s3s-fs; the test runs "$tools/schemathesis/bin/st".
  st_version=4.32.5
  if ! "$tools/schemathesis/bin/st" --version 2>/dev/null | grep -q " $st_version"; then
    echo "==> installing schemathesis $st_version into $tools/schemathesis"
    python3 -m venv "$tools/schemathesis"
    "$tools/schemathesis/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$st_version"
  fi
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "==> starting PostgreSQL"
    cluster=$(ls /etc/postgresql | sort -V | tail -n1)
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$cluster" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
  pg_isready -h 127.0.0.1 -p 5432

  # The browser tests' packages at the versions control-plane/tests/browser/package-lock.json
  # pins: hls.js (the player the ladder test loads) and playwright-core (drives Debian's
  # Chromium through the console; it never downloads a browser of its own).
  browser="$(cd "$(dirname "$0")/.." && pwd)/control-plane/tests/browser"
  if [ ! -f "$browser/node_modules/.package-lock.json" ] \
     || [ "$browser/package-lock.json" -nt "$browser/node_modules/.package-lock.json" ]; then
    echo "==> installing the browser tests' packages (hls.js, playwright-core)"
    (cd "$browser" && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
