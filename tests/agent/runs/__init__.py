"""Tests of agent.runs."""
