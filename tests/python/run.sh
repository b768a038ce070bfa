#!/usr/bin/env bash
# The Python adapter's tests: see adapters/python/run_tests.sh.
exec "$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/adapters/python/run_tests.sh" "$@"
