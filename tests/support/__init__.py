"""Test stand-ins and helpers shared by several test packages (not shipped)."""
