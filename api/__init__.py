"""Litestar HTTP API over the published standings (DESIGN §7)."""
