#!/usr/bin/env bash
# Install everything, then run a short training demo on built-in data:
# the multigraph topology on the Gaia network (11 silos), digits task, on
# Flower's Simulation Engine. Extra arguments are passed to `fedsim run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/fedsim run --topology gaia --strategy multigraph --task digits --rounds 40 \
  --out runs/demo --overwrite "$@"
echo "plots: runs/demo/metric_vs_round.png runs/demo/metric_vs_time.png"
