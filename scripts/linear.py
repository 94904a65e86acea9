"""Linear probe on a checkpoint's frozen backbone.

``python scripts/linear.py --ckpt PATH --data digits [--augment]`` (``--help`` lists the options).
"""

from sslib.app.eval.cli import linear_main

if __name__ == "__main__":
    raise SystemExit(linear_main())
