"""``python -m sslib.app.recipes``: ``sslib recipes`` (:func:`sslib.app.recipes.cli.recipes_main`)."""

from sslib.app.recipes.cli import recipes_main

if __name__ == "__main__":
    raise SystemExit(recipes_main())
