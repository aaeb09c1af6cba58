#!/usr/bin/env bash
# Set up segsr and run the main job on the embedded synthetic street scenes (made here, no download; CPU is fine):
# the benchmark's `demo` profile (segsr/benchmark_profiles/demo.yml) = judge, deployed segmenter and L1 start, then
# S->T, stock ESRGAN, SegAwareGAN, SR4IR, SeD, the combination and "SR for my segmenter", all fine-tuned from the L1
# start on one schedule, scored by the judge and the deployed segmenter with 95% intervals against S->T.
# Usage (from anywhere): bash scripts/demo.sh     Outputs: experiments/demo/ (results.md, results.json, grid.png, runs/)
# Rerunning resumes; starting points are cached in ~/.cache/segsr/benchmark (--cache to move them).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${SEGSR_SKIP_INSTALL:-0}" != "1" ]; then
  python -m pip install --disable-pip-version-check -q -c constraints.txt -e .
fi
out=experiments/demo  # or the folder given with --out DIR / --out=DIR
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[$i]}" in
    --out) out="${args[$((i + 1))]:-$out}" ;;
    --out=*) out="${args[$i]#--out=}" ;;
  esac
done
python -m segsr.benchmark --profile demo --out experiments/demo "$@"
echo
cat "$out/results.md"
echo "Table, JSON, picture grid and mIoU-vs-PSNR plot: $out/ ; every run's options and logs: $out/{options,runs}/"
