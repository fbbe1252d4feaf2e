#!/usr/bin/env bash
# The whole test suite: install fsdf with its test extras and the servers the tests need, check the code with
# ruff and mypy (configured in pyproject.toml; any finding fails the run), then pytest.
# The tests start each server on a loopback port and stop it when they finish.
#
# pytest runs in two parts: everything but the `timing` tests in three processes (pytest-xdist; each starts
# its own servers on its own ports), then the `timing` tests (paces, latencies) alone, so the other
# processes' load cannot skew what they measure. Arguments go to both parts. Three processes on two cores,
# since these tests mostly wait on servers, sleeps and child processes: with two, the cores were busy about
# a quarter of the time, and a third process cut the part's wall time by about a third (FSDF_TEST_WORKERS sets
# the number). The parallel part hands out whole modules in the order tests/conftest.py gives them (the
# longest first, MODULE_SECONDS), not xdist's order by number of tests, so no long module starts last while
# the other workers have nothing left to do.
FSDF_EXTRAS="all,test,browser" source "$(dirname "$0")/_venv.sh"
bash tests/servers/install.sh
if ! .venv/bin/ruff check fsdf tests bench test_frame; then
  echo "scripts/test.sh: FAILED: ruff check found lint errors (listed above)" >&2
  exit 1
fi
if ! .venv/bin/mypy; then
  echo "scripts/test.sh: FAILED: mypy found type errors (listed above)" >&2
  exit 1
fi
# Exit code 5 is "no tests collected": a part may be empty when a developer names a few tests.
status=0
.venv/bin/python -m pytest -n "${FSDF_TEST_WORKERS:-3}" --dist loadfile --no-loadscope-reorder -m "not timing" \
  "$@" || status=$?
[ "$status" -eq 5 ] && status=0
timing=0
.venv/bin/python -m pytest -p no:xdist -m timing "$@" || timing=$?
[ "$timing" -eq 5 ] && timing=0
if [ "$status" -ne 0 ] || [ "$timing" -ne 0 ]; then
  echo "scripts/test.sh: FAILED: pytest exited with $status (parallel part) and $timing (timing part)" >&2
  exit 1
fi
