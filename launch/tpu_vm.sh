#!/usr/bin/env bash
# Runs the same training command on every worker of a Cloud TPU VM slice.
#
#   launch/tpu_vm.sh [--repo-dir DIR] TPU_NAME ZONE CONFIG WORKDIR [--config.x=y ...]
#   launch/tpu_vm.sh --repo-dir surveylm_jax my-v5p-16 us-east5-a configs/stage2_task4.py \
#       gs://bucket/runs/t4 --config.mesh.fsdp=-1
#
# --repo-dir DIR (or REPO_DIR=DIR in the environment): where the checkout lies on the workers,
#   absolute or relative to the remote home folder. Default: the basename of this checkout
#   (a checkout at ~/code/surveylm_jax here is looked for at ~/surveylm_jax there).
# Every worker needs that checkout with `make setup` and
# `.venv/bin/pip install -r requirements-tpu.txt` done, and must reach CONFIG, WORKDIR and the
# model the config names (a gs:// WORKDIR, or a disk mounted on every worker).
#
# Each worker runs `python -m launch.train` with SURVEYLM_DISTRIBUTED=tpu, so that
# surveylm_jax.sharding.initialize_distributed lets jax discover the slice (worker list and id
# come from the TPU VM metadata server); no addresses are passed here.
set -euo pipefail

usage() {
  echo "usage: $0 [--repo-dir DIR] TPU_NAME ZONE CONFIG WORKDIR [--config.overrides ...]"
  echo "  --repo-dir DIR  the checkout on the workers, absolute or relative to their home"
  echo "                  (env REPO_DIR; default: $DEFAULT_REPO_DIR)"
}

DEFAULT_REPO_DIR=$(basename "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)")
REPO_DIR=${REPO_DIR:-$DEFAULT_REPO_DIR}
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --repo-dir) [ $# -ge 2 ] || { usage >&2; exit 2; }; REPO_DIR=$2; shift 2 ;;
    --repo-dir=*) REPO_DIR=${1#--repo-dir=}; shift ;;
    *) break ;;
  esac
done
if [ $# -lt 4 ]; then
  usage >&2
  exit 2
fi
TPU_NAME=$1; ZONE=$2; CONFIG=$3; WORKDIR=$4; shift 4
REPO_DIR=${REPO_DIR#\~/}   # "~/x": the remote shell would not expand a quoted ~; x is the same place
OVERRIDES=""
if [ $# -gt 0 ]; then
  OVERRIDES=$(printf ' %q' "$@")
fi

# The remote command is one string run by the worker's shell: quote every piece of it.
REMOTE="cd $(printf '%q' "$REPO_DIR") || { echo \"\$(hostname): no checkout at $(printf '%q' "$REPO_DIR") (use --repo-dir)\" >&2; exit 2; }
SURVEYLM_DISTRIBUTED=tpu PYTHONPATH=. .venv/bin/python -m launch.train \
  --config=$(printf '%q' "$CONFIG") --workdir=$(printf '%q' "$WORKDIR")$OVERRIDES"
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command "$REMOTE"
