"""The one study engine and the two studies declared on it (see docs/architecture.md)."""
