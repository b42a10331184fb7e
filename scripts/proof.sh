#!/usr/bin/env bash
# The full reliability run (issue 4): the crash proof at 40,000 customers with at least 50
# SIGKILLs per backend, then every fault-and-abuse test, printing the figures the README quotes.
# Needs PostgreSQL (RETENTIOND_TEST_POSTGRES_URL, default the local server). CI runs the same
# tests at a smaller scale through `cargo test --all-targets`.
set -euo pipefail
cd "$(dirname "$0")/.."
export RETENTIOND_TEST_POSTGRES_URL="${RETENTIOND_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
export RETENTIOND_PROOF_CUSTOMERS="${RETENTIOND_PROOF_CUSTOMERS:-40000}"
export RETENTIOND_PROOF_KILLS="${RETENTIOND_PROOF_KILLS:-50}"
cargo test --test cli sigkill -- --nocapture --test-threads 1 2>&1 | grep -E "crash proof|test result"
cargo test --test instances --test approval_loop --test faults --test daemon --test properties -- --nocapture 2>&1 \
  | grep -E "killed instance|fault proof|test result"
