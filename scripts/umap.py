"""UMAP plot of a checkpoint's frozen val features, coloured by class (needs ``sslib-vision[umap]``).

``python scripts/umap.py --ckpt PATH --data digits [--out umap.png]`` (``--help`` lists the options).
"""

import sys
from pathlib import Path

# This file shares umap-learn's module name: take its folder off the import path so `import umap` finds
# the package, not this script.
HERE = Path(__file__).resolve().parent
sys.path = [p for p in sys.path if Path(p or ".").resolve() != HERE]

from sslib.app.eval.cli import umap_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(umap_main())
