"""Semi-supervised fine-tuning of a checkpoint's backbone on 1% and 10% of the train labels.

``python scripts/finetune.py --ckpt PATH --data digits`` (``--help`` lists the options).
"""

from sslib.app.eval.cli import finetune_main

if __name__ == "__main__":
    raise SystemExit(finetune_main())
