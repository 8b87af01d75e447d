"""Tests of agent.activity: the git log reader, events, identities and estimates."""
