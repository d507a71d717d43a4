#!/usr/bin/env bash
# The whole test suite, on a fresh machine as in CI: installs what the tests need, then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked --all-targets "$@"
