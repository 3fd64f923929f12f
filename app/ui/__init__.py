"""The ledger console: server-rendered pages at /ui over the same services as the API."""
