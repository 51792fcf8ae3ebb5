#!/usr/bin/env bash
# expect_failure.sh MAX_SECONDS REGEX COMMAND...: passes when COMMAND exits non-zero within
# MAX_SECONDS and its output (stdout and stderr) matches the extended REGEX; prints the output.
# EXPECT_STATUS=N additionally requires exit status N.
set -u
max_seconds=$1 pattern=$2
shift 2
start=$(date +%s)
output=$(timeout --kill-after=10 "$max_seconds" "$@" 2>&1)
status=$?
elapsed=$(($(date +%s) - start))
printf '%s\n' "$output"
echo "expect_failure: exit status $status after ${elapsed} s"
# timeout(1) answers 124 (or 137 after --kill-after); mpirun itself may exit 137 for a rank killed by
# SIGKILL, so the elapsed time tells a hang.
if ((status == 124 || (status == 137 && elapsed >= max_seconds))); then
  echo "expect_failure: FAILED: still running after $max_seconds s (a hang)"; exit 1
fi
if ((status == 0)); then
  echo "expect_failure: FAILED: the command succeeded"; exit 1
fi
if [[ -n "${EXPECT_STATUS:-}" && "$status" != "$EXPECT_STATUS" ]]; then
  echo "expect_failure: FAILED: exit status $status, expected $EXPECT_STATUS"; exit 1
fi
if ! grep -Eq -- "$pattern" <<<"$output"; then
  echo "expect_failure: FAILED: the output does not match /$pattern/"; exit 1
fi
echo "expect_failure: ok"
