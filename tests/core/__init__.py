"""Units of the torch-only core, one folder per package."""
