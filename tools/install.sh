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

# The grader runs every submission in a bubblewrap sandbox (tools/grade.py). Install bwrap where
# the platform has it and we may (root, or passwordless sudo, on Debian/Ubuntu); elsewhere say so:
# the grader then runs without a sandbox and says so loudly in every report.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(uname -s)" = Linux ] && command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo -n"; fi
    if $SUDO apt-get update -qq >/dev/null && \
       $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; then
      echo "installed bubblewrap (the grader's sandbox)"
    else
      echo "WARNING: could not install bubblewrap (apt-get install bubblewrap): the grader will run" \
           "submissions WITHOUT a sandbox" >&2
    fi
  else
    echo "note: bubblewrap (bwrap) is not available on this platform: tools/grade.py will grade" \
         "without a sandbox (see docs/threat-model.md in the instructor's copy of the lab)" >&2
  fi
fi
