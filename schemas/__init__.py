"""Avro schemas: the public contract of every paybus topic."""

from pathlib import Path

SCHEMA_DIR = Path(__file__).parent
