"""Numbered, idempotent SQL files that create and upgrade the land register (schema ``land``)."""
