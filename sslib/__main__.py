"""``python -m sslib <command>``: the ``sslib`` command (:mod:`sslib.app.commands`)."""

from sslib.app.commands import main

if __name__ == "__main__":
    raise SystemExit(main())
