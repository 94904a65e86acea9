"""``python -m sslib.recipes``: ``sslib recipes`` (:func:`sslib.recipes.cli.recipes_main`)."""

from sslib.recipes.cli import recipes_main

if __name__ == "__main__":
    raise SystemExit(recipes_main())
