#!/usr/bin/env bash
# Install everything the lab needs into the current Python environment.
# torch first, and only if it is missing: Colab and GPU machines keep the build they have; on the
# course machines `torch==2.13.0` is a CPU wheel on local disk (an unpinned torch would pull
# several GB of CUDA wheels there).
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q torch==2.13.0 || python -m pip install -q "torch>=2.4"
fi
python -m pip install -q -r requirements.txt
