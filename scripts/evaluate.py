"""One evaluation report (Markdown + CSV + PNG) of a checkpoint for a suite of protocols.

``python scripts/evaluate.py CKPT suite=paper data=imagenet root=/data/imagenet`` (``--help`` lists the usage).
"""

from sslib.app.eval.cli import evaluate_main

if __name__ == "__main__":
    raise SystemExit(evaluate_main())
