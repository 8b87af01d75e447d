"""Watchkeeper's Qt desktop app and tray icon."""
