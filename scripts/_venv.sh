# Sourced by the other scripts: make .venv with Python 3.11+ and install fsdf into it with the given extras.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    # Debian ships venv separately.
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf .venv && "$PYTHON" -m venv .venv
  fi
fi
spec="."
[ -n "${FSDF_EXTRAS:-}" ] && spec=".[${FSDF_EXTRAS}]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec"
