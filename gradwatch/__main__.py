"""``python -m gradwatch``: the ``gradwatch`` command."""

import sys

from .cli import main

sys.exit(main())
