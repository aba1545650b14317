#!/usr/bin/env bash
# The one test command (named by the README and called by .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# The container tests need their images (built locally: nothing can be pulled).
bash scripts/build-test-images.sh

# Containers left by an earlier, interrupted test run (their nodes are named test-…).
leftovers() {
  docker ps -a --filter label=capecontrol.managed=true --format '{{.ID}} {{.Label "capecontrol.node"}}' |
    awk '$2 ~ /^test-/ {print $1}'
}
stale=$(leftovers)
[ -z "$stale" ] || docker rm -f $stale >/dev/null

cargo test --workspace --all-targets
cargo test --workspace --doc

# No container of ours may outlive the suite.
left=$(leftovers)
if [ -n "$left" ]; then
  echo "test.sh: the tests left containers behind: $left" >&2
  docker rm -f $left >/dev/null
  exit 1
fi
