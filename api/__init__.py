"""Litestar HTTP API over the published standings (docs/contracts.md#routes)."""
