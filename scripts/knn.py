"""Weighted kNN of a checkpoint's frozen features with 100%, 10%, 1% of the train labels.

``python scripts/knn.py --ckpt PATH --data digits`` (``--help`` lists the options).
"""

from sslib.app.eval.cli import knn_main

if __name__ == "__main__":
    raise SystemExit(knn_main())
