#!/usr/bin/env bash
# The one test command (named by the README and called by .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --workspace --all-targets
cargo test --workspace --doc
