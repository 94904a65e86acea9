"""``python -m sslib <command>``: the ``sslib`` command (:mod:`sslib.commands`)."""

from sslib.commands import main

if __name__ == "__main__":
    raise SystemExit(main())
