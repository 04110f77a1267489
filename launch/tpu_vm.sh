#!/usr/bin/env bash
# Runs the same training command on every worker of a Cloud TPU VM pod slice.
#
#   launch/tpu_vm.sh TPU_NAME ZONE configs/stage2_task4.py gs://bucket/runs/t4 [--config.x=y ...]
#
# Each worker runs `python -m launch.train`; jax.distributed discovers the slice from the TPU VM
# environment (surveylm_jax.sharding.initialize_distributed), so no addresses are passed here.
# The repository must already be cloned at ~/surveylm_jax on every worker with `make setup`
# and `pip install -r requirements-tpu.txt` done.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 TPU_NAME ZONE CONFIG WORKDIR [--config.overrides ...]" >&2
  exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
OVERRIDES=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "
  cd ~/surveylm_jax && PYTHONPATH=. .venv/bin/python -m launch.train \
    --config=$CONFIG --workdir=$WORKDIR $OVERRIDES"
