#!/usr/bin/env bash
# The main job: publish 10,000 tasks to the SQLite broker, consume them in another process, show progress.
FSDF_EXTRAS="" source "$(dirname "$0")/_venv.sh"
exec .venv/bin/python -m test_frame.demo "$@"
