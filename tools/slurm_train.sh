#!/usr/bin/env bash
# Training under Slurm: one task per GPU.
#   bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [options]
# GPUS (total, default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5) and
# SRUN_ARGS are read from the environment.
#
# Preemption and time limits: srun asks Slurm to send SIGTERM
# SIGNAL_BEFORE_END seconds (default 120) before the job's end; the
# PreemptionHook of the configs then saves iter_N.pth after the current
# iteration and exits with status 0. Slurm sends SIGTERM on preemption and
# scancel as well. AUTO_RESUME=1 adds --resume (start from scratch when the
# work directory has no checkpoint), so a job submitted with
# `sbatch --requeue` (or requeued by the scheduler after preemption)
# continues where it stopped. See docs/fault_tolerance.md.
set -x
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=${4:-}
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
SIGNAL_BEFORE_END=${SIGNAL_BEFORE_END:-120}
PY_ARGS=${@:5}
WORK_DIR_ARGS=()
[ -n "$WORK_DIR" ] && WORK_DIR_ARGS=(--work-dir "$WORK_DIR")
RESUME_ARGS=()
[ "${AUTO_RESUME:-0}" = 1 ] && RESUME_ARGS=(--resume)

PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH:-} \
srun -p "${PARTITION}" \
    --job-name="${JOB_NAME}" \
    --gres=gpu:"${GPUS_PER_NODE}" \
    --ntasks="${GPUS}" \
    --ntasks-per-node="${GPUS_PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" \
    --kill-on-bad-exit=1 \
    --signal=TERM@"${SIGNAL_BEFORE_END}" \
    ${SRUN_ARGS} \
    "${PYTHON:-python}" -u "$(dirname "$0")/train.py" "${CONFIG}" "${WORK_DIR_ARGS[@]}" \
    "${RESUME_ARGS[@]}" --launcher slurm ${PY_ARGS}
