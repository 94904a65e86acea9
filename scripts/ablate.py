"""Train and compare methods or labelers on one budget: ``python scripts/ablate.py methods=[mira,swav,dino]``.

``--help`` lists the options; outputs are described in docs/ablations.md.
"""

from sslib.app.ablate.cli import ablate_main

if __name__ == "__main__":
    raise SystemExit(ablate_main())
