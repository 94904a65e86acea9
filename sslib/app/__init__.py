"""sslib's application layer: what runs a configured experiment on top of the torch-only core.

Lightning training (``methods``, ``callbacks``, ``datamodule``, ``train``), the Hydra configs and their
composition (``conf``, ``config``), the command lines (``commands``, ``cli``), and the tools built on
trained checkpoints: offline evaluation (``eval``), ablations (``ablate``), the model zoo (``zoo``) and
the recipe files and their checker (``recipe``, ``recipes``). Nothing in the core (the other packages of ``sslib``) imports
from here.
"""
