"""The web layer: Flask views over the intake and read-side use cases (docs/design.md)."""
