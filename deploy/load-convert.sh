#!/usr/bin/env bash
# /convert under concurrent clients: deploy/load-convert.sh [seconds per row] [clients…]
# Starts a fresh embedded default (rate limits raised, CPU resize), posts a
# 640 px JPEG cut from ../shared/media/photo/chelsea.png for a 320 px WebP with wrk at each
# client count, and prints converted/s, p50, p99 and refused (503)/s per row. wrk comes with
# `KILN_BENCH=1 deploy/setup-debian.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
shift || true
clients=("$@")
[ ${#clients[@]} -eq 0 ] && clients=(1 2 8 32)
media="${KILN_MEDIA_DIR:-$(cd .. && pwd)/shared/media}"
work=$(mktemp -d)
key=kiln_load_test_admin_key_0123456789
port=${KILN_LOAD_PORT:-18090}
# The test build by default (opt-level 1, dependencies 2: the README's figures);
# KILN_LOAD_RELEASE=1 for the release build deploy/run.sh serves.
if [ "${KILN_LOAD_RELEASE:-0}" = 1 ]; then
    cargo build --release -p kiln-control-plane
    bin=target/release/kiln-control-plane
else
    cargo build --workspace --all-targets
    bin=target/debug/kiln-control-plane
fi
ffmpeg -v error -y -i "$media/photo/chelsea.png" -vf scale=640:-2 "$work/load.jpg"
python3 - "$work" <<'PY'
import sys
work = sys.argv[1]
img = open(f"{work}/load.jpg", "rb").read()
b = "kilnloadboundary"
head = "".join(
    f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
    for k, v in [("format", "webp"), ("width", "320")]
)
head += f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="load.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
open(f"{work}/body.bin", "wb").write(head.encode() + img + f"\r\n--{b}--\r\n".encode())
PY
cat > "$work/convert.lua" <<LUA
local f = io.open("$work/body.bin", "rb")
wrk.body = f:read("*all")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=kilnloadboundary"
wrk.headers["Authorization"] = "Bearer $key"
done = function(summary, latency, requests)
  local s = summary.duration / 1e6
  local refused = summary.errors.status
  io.write(string.format("%.0f %.1f %.1f %.0f\n", (summary.requests - refused) / s,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, refused / s))
end
LUA
KILN_DATA_DIR="$work/data" KILN_LISTEN="127.0.0.1:$port" KILN_BOOTSTRAP_KEY=$key \
    KILN_RATE_WRITE_PER_MIN=100000000 KILN_RATE_READ_PER_MIN=100000000 \
    KILN_IMAGE_RESIZER=cpu RUST_LOG=warn "$bin" >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 60); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 1
done
echo "| Clients | Converted /s | p50 ms | p99 ms | Refused (503) /s |"
echo "|---|---|---|---|---|"
for c in "${clients[@]}"; do
    read -r ok p50 p99 refused < <(wrk -t1 -c"$c" -d"${secs}s" --latency -s "$work/convert.lua" \
        "http://127.0.0.1:$port/api/v1/convert" | tail -1)
    echo "| $c | $ok | $p50 | $p99 | $refused |"
done
