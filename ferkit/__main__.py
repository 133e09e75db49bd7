"""``python -m ferkit`` is the ``ferkit`` command."""

import sys

from ferkit.apps.cli import main

sys.exit(main())
