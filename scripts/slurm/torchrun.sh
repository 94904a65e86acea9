#!/bin/bash
# Without SLURM: start one torchrun per node; it starts one process per GPU and Lightning reads the ranks
# from it. On each of NNODES nodes (NODE_RANK = 0, 1, ...; MASTER_ADDR = the first node's address):
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash scripts/slurm/torchrun.sh method=mira data=imagenet ...
# One node: bash scripts/slurm/torchrun.sh method=mira data=imagenet100 data.root=/data/imagenet100
# Extra arguments are pretrain.py overrides. SIGTERM to torchrun reaches every process: they save
# checkpoints/last.ckpt after the current step and exit with status 143; the same command resumes.
set -euo pipefail
GPUS="${GPUS:-$(nvidia-smi -L | wc -l)}"
NNODES="${NNODES:-1}"
torchrun --nnodes="${NNODES}" --nproc-per-node="${GPUS}" --node-rank="${NODE_RANK:-0}" \
    --master-addr="${MASTER_ADDR:-127.0.0.1}" --master-port="${MASTER_PORT:-29500}" \
    scripts/pretrain.py trainer.devices="${GPUS}" trainer.num_nodes="${NNODES}" "$@"
