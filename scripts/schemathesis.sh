#!/usr/bin/env bash
# Property-based testing of the HTTP API: schemathesis generates requests from the served OpenAPI
# document (/api/openapi.json) and sends them to a live `capecontrol serve --demo` (in-memory
# store, an ephemeral port, an admin key made for this run). It fails on any server error (5xx)
# and on any response whose body does not match the schema the document declares for it.
#
#   bash scripts/schemathesis.sh            # builds the binary, starts serve, runs, stops serve
#
# schemathesis is a Python package: it is installed into a virtual environment under
# ~/.cache/capecontrol-venv (CAPECONTROL_VENV) the first time. Called by scripts/test.sh.
# SCHEMATHESIS_MAX_EXAMPLES (default 30) sets the number of generated cases per operation.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${CAPECONTROL_VENV:-${HOME:-/root}/.cache/capecontrol-venv}"
if [[ ! -x "$venv/bin/schemathesis" ]]; then
    echo "==> installing schemathesis into $venv"
    if ! { python3 -m venv "$venv" &&
        "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis>=4,<5"; }; then
        if [[ -n "${CI:-}" ]]; then
            echo "schemathesis.sh: cannot install schemathesis in CI" >&2
            exit 1
        fi
        echo "schemathesis.sh: WARNING: cannot install schemathesis; the API property tests skip" >&2
        exit 0
    fi
fi

echo "==> cargo build --bin capecontrol"
cargo build --quiet --bin capecontrol
bin="${CARGO_TARGET_DIR:-target}/debug/capecontrol"

work=$(mktemp -d)
key="cc_schemathesis_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
CAPECONTROL_ADMIN_KEY="$key" CAPECONTROL_LOG=warn \
    "$bin" serve --demo --listen 127.0.0.1:0 >"$work/stdout" 2>"$work/stderr" </dev/null &
pid=$!
cleanup() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# serve's first line on stdout is `listening on http://ADDR`.
url=""
for _ in $(seq 1 300); do
    if line=$(head -n 1 "$work/stdout" 2>/dev/null) && [[ "$line" == "listening on "* ]]; then
        url="${line#listening on }"
        break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if [[ -z "$url" ]]; then
    echo "schemathesis.sh: capecontrol serve did not start:" >&2
    cat "$work/stderr" >&2
    exit 1
fi
echo "==> schemathesis against $url"

status=0
"$venv/bin/schemathesis" run "$url/api/openapi.json" \
    --url "$url" \
    --header "Authorization: Bearer $key" \
    --checks not_a_server_error,response_schema_conformance \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-30}" \
    --request-timeout 10 \
    --seed 1 \
    --no-color || status=$?

if [[ $status -ne 0 ]]; then
    echo "schemathesis.sh: schemathesis failed (exit $status); the server's log:" >&2
    tail -n 50 "$work/stderr" >&2
fi
exit "$status"
