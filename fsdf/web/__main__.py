"""``python -m fsdf.web``: serve the dashboard (see :mod:`fsdf.web.serve`)."""
import sys

from fsdf.web import main

sys.exit(main(sys.argv[1:]))
