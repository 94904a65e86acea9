"""Whole runs, the command line, examples, the built wheel and the import contracts."""
