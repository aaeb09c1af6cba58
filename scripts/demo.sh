#!/usr/bin/env bash
# Set up segsr and run the main job on the embedded synthetic data (CPU is fine; a few minutes):
# judge -> L1 RRDB -> stock ESRGAN, the segmentation-aware GAN, SR4IR and SeD (all from the L1 RRDB) -> one evaluation
# table + picture grid with the same judge.
# Usage (from anywhere): bash scripts/demo.sh     Outputs: experiments/demo_*, results/demo_eval/
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SEGSR_SKIP_INSTALL:-0}" != "1" ]; then
  python -m pip install --disable-pip-version-check -q -c constraints.txt -e .
fi
if [ ! -f datasets/synthetic/dataset_info.yml ]; then
  python scripts/make_synthetic_data.py --out datasets/synthetic --num-train 48 --num-val 8 --height 192 --width 192
fi
python segsr/train.py -opt options/demo/train_judge_demo.yml
python segsr/train.py -opt options/demo/train_rrdb_l1_demo.yml
python segsr/train.py -opt options/demo/train_esrgan_demo.yml
python segsr/train.py -opt options/demo/train_segsr_demo.yml
python segsr/train.py -opt options/demo/train_sr4ir_demo.yml
python segsr/train.py -opt options/demo/train_sed_demo.yml
python segsr/evaluate.py -opt options/demo/evaluate_demo.yml
echo
cat results/demo_eval/results.md
echo "Logs, checkpoints and pictures: experiments/demo_*/ ; table, JSON and grid: results/demo_eval/"
