"""Run the watchkeeper command line as `python -m agent`."""

from agent.cli import main

main()
