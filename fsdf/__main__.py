"""``python -m fsdf``: the ``fsdf`` command (fsdf/cli), for environments without the console script."""
import sys

from fsdf.cli import main

sys.exit(main())
