"""Ablations: train several methods or labelers on one budget, over seeds, evaluate each, and tabulate and
plot them.

``python scripts/ablate.py methods=[mira,swav,dino] data=digits`` (see ``docs/ablations.md``). ``plan``
turns the command line into runs; ``sweep`` starts those still needed with a launcher of ``launch``
(this process, local processes or SLURM jobs through submitit) and records them in ``state``; ``runner``
trains, resumes or skips and evaluates one run wherever it runs; ``metrics`` reads what it logged;
``report`` writes the ``table`` (with the ``stats`` over seeds) and the ``plot``; ``cli`` is the command
line.
"""
