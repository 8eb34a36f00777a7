"""`python -m backend ...`: the `layerbridge` command (the launcher starts the server this way)."""

import sys

from .cli.main import main

if __name__ == "__main__":  # not when a spawned process (the CFG partner) imports this module as its parent's main
    sys.exit(main())
