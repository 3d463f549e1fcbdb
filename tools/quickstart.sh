#!/usr/bin/env bash
# The main job on a fresh machine: set up the environment, generate the demo
# dataset, train X3D-XS on it, test the best checkpoint with multi-view
# testing, and print a summary.
#   WORK_DIR (default work_dirs/x3d_xs_demo), DATA_ROOT (data/x3d_demo)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tools/setup_env.sh
python=${X3D_VENV:-$root/.venv}/bin/python
work_dir=${WORK_DIR:-work_dirs/x3d_xs_demo}
data_root=${DATA_ROOT:-data/x3d_demo}
start=$(date +%s)

if [ ! -f "$data_root/val_list_videos.txt" ]; then
    echo "[quickstart] generating the demo dataset in $data_root"
    "$python" tools/data/generate_demo_dataset.py "$data_root"
fi

echo "[quickstart] training X3D-XS (configs/x3d_xs_demo.py) in $work_dir"
"$python" tools/train.py configs/x3d_xs_demo.py --work-dir "$work_dir"

best=$(ls -t "$work_dir"/best_acc_top1_epoch_*.pth 2>/dev/null | head -n 1)
if [ -z "$best" ]; then
    best="$work_dir/$(cat "$work_dir/last_checkpoint" | xargs basename)"
fi
echo "[quickstart] testing $best with 2 clips x 3 crops"
"$python" tools/test.py configs/x3d_xs_demo.py "$best" \
    --work-dir "$work_dir" --dump "$work_dir/test_scores.pkl" \
    | tee "$work_dir/test_result.txt"

result=$(grep '^Test result:' "$work_dir/test_result.txt" | tail -n 1)
elapsed=$(( $(date +%s) - start ))
cat <<SUMMARY

==================== x3d_plugin quick start ====================
 model        X3D-XS, trained from scratch (configs/x3d_xs_demo.py)
 data         $data_root ($(wc -l < "$data_root/train_list_videos.txt") train / $(wc -l < "$data_root/val_list_videos.txt") test videos, 8 classes)
 ${result}
 checkpoint   $best
 logs         $work_dir (per-video scores: $work_dir/test_scores.pkl)
 time         $((elapsed / 60)) min $((elapsed % 60)) s
================================================================
SUMMARY
