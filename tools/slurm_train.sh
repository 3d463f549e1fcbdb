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
# continues where it stopped. Inside a batch job (SLURM_JOB_ID set) with
# AUTO_RESUME=1, a run that stopped on the signal -- e.g. at the time
# limit, which Slurm does not requeue by itself -- leaves the file
# `preempted` in the work directory, and this script then requeues the job
# (`scontrol requeue $SLURM_JOB_ID`; REQUEUE=0 turns that off). See
# docs/fault_tolerance.md.
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
# Where tools/train.py writes without --work-dir (a config's own work_dir
# is not read here: pass WORK_DIR to requeue such a run).
RUN_DIR=${WORK_DIR:-work_dirs/$(basename "$CONFIG" .py)}
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
STATUS=$?
if [ "${AUTO_RESUME:-0}" = 1 ] && [ "${REQUEUE:-1}" = 1 ] \
        && [ -n "${SLURM_JOB_ID:-}" ] && [ -f "$RUN_DIR/preempted" ]; then
    echo "slurm_train.sh: stopped at $(cat "$RUN_DIR/preempted"); requeueing" \
        "job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
fi
exit $STATUS
