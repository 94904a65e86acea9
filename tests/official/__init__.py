"""Training steps against float64 references of the official codes."""
