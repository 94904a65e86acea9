"""The test suite, laid out by layer (see docs/contributing.md)."""
