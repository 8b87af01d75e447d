"""Run the desktop app as `python -m desktop_app [--tray] [--screenshot DIR]`."""

import sys

from desktop_app.app import main

sys.exit(main())
