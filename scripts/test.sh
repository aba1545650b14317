#!/usr/bin/env bash
# The one test command: named by the README and called by .ci/run. It builds and runs every
# test of the workspace (unit, integration, CLI, property and doc tests). Later issues add the
# PostgreSQL and Docker setup their tests need here, so that this stays the only command.
set -euo pipefail
cd "$(dirname "$0")/.."

run() {
    echo "==> $*"
    "$@"
}

run cargo test --workspace --all-targets
run cargo test --workspace --doc
