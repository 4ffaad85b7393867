#!/usr/bin/env bash
# Install everything, then run a short training demo on built-in data: CDL
# steering regression on the Exodus network (79 silos) wired as a multigraph,
# on Flower's Simulation Engine. Extra arguments are passed to `fedsim run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/fedsim run --topology exodus --strategy multigraph --task cdl --rounds 5 \
  --out runs/demo --overwrite "$@"
echo "plots: runs/demo/metric_vs_round.png runs/demo/metric_vs_time.png"
