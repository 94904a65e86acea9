"""Units of the application layer (Lightning, Hydra, tools), one folder per package."""
