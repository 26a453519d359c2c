#!/usr/bin/env bash
# Schema fuzzing: schemathesis against a fresh embedded default's published OpenAPI document,
# every operation, examples + coverage + fuzzing + stateful phases. The test suite runs a
# bounded version of the same run (control-plane/tests/api/fuzz.rs, 15 examples, 3 minutes);
# this is the longer one. Exits non-zero on any failure; the report is left in $out.
#   deploy/fuzz-api.sh [max-examples (200)] [max-seconds (1800)] [seed (20261207)]
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-200}
seconds=${2:-1800}
seed=${3:-20261207}
st="${KILN_SCHEMATHESIS:-$HOME/.cache/kiln/tools/schemathesis/bin/st}"
[ -x "$st" ] || { echo "schemathesis is missing: run deploy/setup-debian.sh --test" >&2; exit 1; }
cargo build --quiet -p kiln-control-plane
out=$(mktemp -d /tmp/kiln-fuzz.XXXXXX)
key=kiln_fuzz_admin_key_$(date +%s)
port=$((20000 + RANDOM % 20000))
# Conformance, not the per-key limits (tested elsewhere): a fuzzer would spend its run on 429s.
KILN_RATE_WRITE_PER_MIN=1000000 KILN_RATE_READ_PER_MIN=1000000 KILN_BOOTSTRAP_KEY=$key \
  target/debug/kiln-control-plane --data-dir "$out/data" --listen "127.0.0.1:$port" \
  >"$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 1; done
echo "==> schemathesis: $examples examples per operation, at most $seconds s, seed $seed (report in $out)"
set +e
"$st" run "http://127.0.0.1:$port/api/v1/openapi.json" --header "Authorization: Bearer $key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing,stateful --exclude-path-regex 'events$' \
  --seed "$seed" --max-examples "$examples" --max-time "$seconds" \
  --request-timeout 30 --max-response-time 20 --workers 1 --no-color \
  --suppress-health-check all --report junit --report-dir "$out" | tee "$out/schemathesis.txt"
rc=${PIPESTATUS[0]}
set -e
curl -sf "127.0.0.1:$port/healthz" >/dev/null && echo "==> the service still serves" \
  || { echo "==> the service stopped serving" >&2; rc=1; }
exit "$rc"
