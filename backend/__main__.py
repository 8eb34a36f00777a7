"""`python -m backend ...`: the `layerbridge` command (the launcher starts the server this way)."""

import sys

from .cli.main import main

sys.exit(main())
