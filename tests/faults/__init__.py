"""Fault tests: real servers of the test's own stopped and started under load."""
