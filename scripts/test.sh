#!/usr/bin/env bash
# The whole test suite: install fsdf with its test extras and the servers the tests need, check the code with
# ruff and mypy (configured in pyproject.toml; any finding fails the run), then pytest.
# The tests start each server on a loopback port and stop it when they finish.
FSDF_EXTRAS="all,test" source "$(dirname "$0")/_venv.sh"
bash tests/servers/install.sh
if ! .venv/bin/ruff check fsdf tests bench test_frame; then
  echo "scripts/test.sh: FAILED: ruff check found lint errors (listed above)" >&2
  exit 1
fi
if ! .venv/bin/mypy; then
  echo "scripts/test.sh: FAILED: mypy found type errors (listed above)" >&2
  exit 1
fi
exec .venv/bin/python -m pytest "$@"
