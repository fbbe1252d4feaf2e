#!/usr/bin/env bash
# The whole test suite: install fsdf with its test extras and the servers the tests need, then pytest.
# The tests start each server on a loopback port and stop it when they finish.
FSDF_EXTRAS="all,test" source "$(dirname "$0")/_venv.sh"
bash tests/servers/install.sh
exec .venv/bin/python -m pytest "$@"
