"""Ablations: train several methods or labelers on one budget, evaluate each, and tabulate and plot them.

``python scripts/ablate.py methods=[mira,swav,dino] data=digits`` (see ``docs/ablations.md``). ``plan``
turns the command line into runs, ``runner`` trains, resumes or skips and evaluates them, ``metrics``
reads what they logged, ``table`` and ``plot`` write the report, ``cli`` is the command line.
"""
