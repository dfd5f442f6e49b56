"""``python -m jaxprune.cli``: the same as the ``jaxprune`` command."""

import sys

from jaxprune.cli import main

sys.exit(main())
