"""Read-only ledger queries of the app, one module per page, all plain functions of a connection."""
