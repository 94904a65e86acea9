"""Linear transfer evaluation (logistic regression on frozen features) of a checkpoint's backbone.

``python scripts/transfer.py --ckpt PATH --data cifar10:data`` (``--help`` lists the options).
"""

from sslib.app.eval.cli import transfer_main

if __name__ == "__main__":
    raise SystemExit(transfer_main())
