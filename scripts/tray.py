#!/usr/bin/env python3
"""LayerBridge tray launcher (the same as `layerbridge tray`): double-click or run it."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backend.launcher.tray import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
