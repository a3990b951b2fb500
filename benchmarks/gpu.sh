#!/usr/bin/env bash
# The GPU benchmark as one prepared script (about eight minutes on an H100 / H200): the
# pipeline tables (benchmarks/pipeline.py), then the efficiency frontier (benchmarks/frontier.py)
#   bash benchmarks/gpu.sh            # full-size tables on the GPU
#   bash benchmarks/gpu.sh --smoke    # tiny sizes on the CPU (what the tests run)
# A GPU machine without network gets what it lacks from wheels carried with the checkout:
# `make gpu-wheels` puts them in benchmarks/wheels/ beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
missing() {
  "$PY" - <<'PYEOF'
import importlib.util
need = {"torch": "torch", "diffusers": "diffusers", "transformers": "transformers",
        "accelerate": "accelerate", "basicsr": "basicsr", "realesrgan": "realesrgan",
        "pandas": "pandas", "skimage": "scikit-image", "tqdm": "tqdm", "cv2": "opencv-python-headless",
        "spandrel": "spandrel", "einops": "einops", "requests": "requests",
        "facenet_pytorch": "facenet-pytorch", "peft": "peft", "tomesd": "tomesd"}
print(" ".join(pkg for mod, pkg in need.items() if importlib.util.find_spec(mod) is None))
PYEOF
}
need=$(missing)
if [ -n "$need" ]; then
  echo "missing: $need" >&2
  if compgen -G "benchmarks/wheels/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/pegu-site \
      benchmarks/wheels/*.whl
    export PYTHONPATH="/tmp/pegu-site${PYTHONPATH:+:$PYTHONPATH}"
  else  # facenet-pytorch pins an old torch: without its dependencies, like make does
    rest=$(echo " $need " | sed 's/ facenet-pytorch / /')
    [ -z "${rest// }" ] || "$PY" -m pip install -q $rest
    [ "$rest" = " $need " ] || "$PY" -m pip install -q --no-deps facenet-pytorch==2.6.0
  fi
  need=$(missing)
  [ -z "$need" ] || { echo "still missing: $need (see make gpu-wheels)" >&2; exit 2; }
fi
export PEGU_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
case " $* " in  # one table asked for: the pipeline script's alone
  *-only*|*--flops*) exec "$PY" benchmarks/pipeline.py "$@" ;;
esac
"$PY" benchmarks/pipeline.py "$@"
exec "$PY" benchmarks/frontier.py "$@"  # the efficiency frontier's cost (docs/efficiency.md)
