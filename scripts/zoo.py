"""The model zoo: ``python scripts/zoo.py list`` and ``python scripts/zoo.py download NAME [--cache-dir D]``."""

from sslib.app.zoo.cli import zoo_main

if __name__ == "__main__":
    raise SystemExit(zoo_main())
