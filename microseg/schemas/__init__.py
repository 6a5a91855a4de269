"""Data files shipped with the package (the event JSON Schema)."""
