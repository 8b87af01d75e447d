"""Tests of the desktop app and tray."""
