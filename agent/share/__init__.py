"""Sharing the ledger with a team: version records on a git ref of the repo's own remote."""
