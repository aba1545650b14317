#!/usr/bin/env bash
# Browser tests of the web console: headless Chromium, driven by Selenium (Python), against a
# live `capecontrol serve --demo` (in-memory store, an ephemeral port on 127.0.0.1, an admin
# key made for this run). The tests sign in, browse and filter the marketplace, install an agent
# with grants and a secret setting (and see it masked), submit a task and watch its steps arrive
# live, cancel a running task, read its audit trail, check that a user cannot reach the admin
# pages and that a form posted without its CSRF token is refused. They save screenshots of the
# main pages to docs/img/console-*.png (CONSOLE_SCREENSHOTS to change), shown in docs/console.md.
#
#   bash scripts/console-test.sh            # builds the binary, starts serve, runs, stops serve
#
# Chromium and its driver are Debian's packages (`chromium`, `chromium-driver`), installed here
# with apt-get when missing; Selenium is installed into a virtual environment under
# ~/.cache/capecontrol-console-venv (CAPECONTROL_CONSOLE_VENV) the first time. In CI (CI set)
# a missing browser or Selenium is a failure; elsewhere the tests are skipped with a warning.
# Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

skip_or_fail() {
    if [[ -n "${CI:-}" ]]; then
        echo "console-test.sh: $1 in CI" >&2
        exit 1
    fi
    echo "console-test.sh: WARNING: $1; the browser tests skip" >&2
    exit 0
}

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "==> installing chromium and chromium-driver (apt-get)"
    # Wait up to 10 min for the dpkg lock (another process may be installing).
    { apt-get -o DPkg::Lock::Timeout=600 update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
            chromium chromium-driver; } >/dev/null 2>&1 || true
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
        skip_or_fail "cannot install chromium and chromium-driver"
    fi
fi

venv="${CAPECONTROL_CONSOLE_VENV:-${HOME:-/root}/.cache/capecontrol-console-venv}"
if ! "$venv/bin/python" -c 'import selenium' 2>/dev/null; then
    echo "==> installing selenium into $venv"
    if ! { python3 -m venv "$venv" &&
        "$venv/bin/pip" install --quiet --disable-pip-version-check "selenium>=4.20,<5"; }; then
        skip_or_fail "cannot install selenium"
    fi
fi

echo "==> cargo build --bin capecontrol"
cargo build --quiet --bin capecontrol
bin="${CARGO_TARGET_DIR:-target}/debug/capecontrol"

work=$(mktemp -d)
key="cc_console_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
CAPECONTROL_ADMIN_KEY="$key" CAPECONTROL_LOG=warn \
    "$bin" serve --demo --listen 127.0.0.1:0 >"$work/stdout" 2>"$work/stderr" </dev/null &
pid=$!
cleanup() {
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# serve's first line on stdout is `listening on http://ADDR`, the second `demo key: KEY`.
url=""
demo=""
for _ in $(seq 1 300); do
    if [[ $(wc -l <"$work/stdout") -ge 2 ]]; then
        url=$(sed -n '1s/^listening on //p' "$work/stdout")
        demo=$(sed -n '2s/^demo key: //p' "$work/stdout")
        break
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if [[ -z "$url" || -z "$demo" ]]; then
    echo "console-test.sh: capecontrol serve did not start:" >&2
    cat "$work/stderr" >&2
    exit 1
fi
echo "==> browser tests against $url/console"

status=0
CONSOLE_URL="$url" CONSOLE_ADMIN_KEY="$key" CONSOLE_DEMO_KEY="$demo" \
    CONSOLE_SCREENSHOTS="${CONSOLE_SCREENSHOTS:-docs/img}" \
    "$venv/bin/python" tests/browser/console_test.py || status=$?

if [[ $status -ne 0 ]]; then
    echo "console-test.sh: the browser tests failed (exit $status); the server's log:" >&2
    tail -n 50 "$work/stderr" >&2
fi
exit "$status"
