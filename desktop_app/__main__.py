"""Run the desktop app as `python -m desktop_app [--tray] [--screenshot DIR]`."""

import sys

from agent.cli.app_cmd import display_problem
from desktop_app.app import main

if (problem := display_problem()) is not None:
    print(f"error: {problem}", file=sys.stderr)
    sys.exit(2)
sys.exit(main())
