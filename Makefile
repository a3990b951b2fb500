# make demo  - pegu's main job, offline (tiny-sd15 -> real Real-ESRGAN x4plus -> 2048x2048)
# make test  - sets up .venv from nothing (idempotent), then runs every test
# make kaggle-sim - the Kaggle kernels from a clean image, internet on and off (make test runs it)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pegu-installed

.PHONY: setup demo test kaggle-sim bench gpu-wheels clean
setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# basicsr is an sdist that imports torch while it builds: torch first, then basicsr
# without build isolation (no second torch in a throw-away build env).
$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt requirements-iqa.txt pyproject.toml
	$(BIN)/pip install -q --disable-pip-version-check torch torchvision
	$(BIN)/pip install -q --disable-pip-version-check wheel cython numpy
	$(BIN)/pip install -q --disable-pip-version-check --no-build-isolation basicsr==1.4.2
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	# the face stage's MTCNN: its pins are for old torch; it runs on this one
	$(BIN)/pip install -q --disable-pip-version-check --no-deps facenet-pytorch==2.6.0
	# HPSv2's own package, the reference tests/test_judges.py holds pegu's HPSv2.1 to: its
	# pins (pytest 7.2, protobuf < 4) would break this environment, its code does not
	$(BIN)/pip install -q --disable-pip-version-check --no-deps hpsv2==1.2.0
	# likewise image-reward, ImageReward's (pins timm 0.6.13, fairscale)
	$(BIN)/pip install -q --disable-pip-version-check --no-deps image-reward==1.5
	# k-diffusion at the commit A1111 v1.10 pins (0.0.16), the reference tests/test_schedules.py
	# holds pegu's sigmas and samplers to; its training stack (clean-fid, wandb) is not needed
	$(BIN)/pip install -q --disable-pip-version-check --no-deps k-diffusion==0.0.16
	$(BIN)/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

demo: $(STAMP)
	$(BIN)/pegu demo

test: $(STAMP)
	PEGU_OFFLINE=1 $(BIN)/python -m pytest -q

kaggle-sim: $(STAMP)
	$(BIN)/python tests/kaggle_sim.py

bench: $(STAMP)
	$(BIN)/python benchmarks/upscale.py --scale
	bash benchmarks/gpu.sh --smoke

# wheels that benchmarks/gpu.sh installs on a GPU machine without network: what pegu needs
# beyond a PyTorch image (torch, transformers, accelerate, cv2, scipy, skimage are there),
# for its Python (GPU_PYTHON); carry benchmarks/wheels with the checkout (~8 MB)
GPU_PYTHON ?= 3.12
gpu-wheels: $(STAMP)
	rm -rf benchmarks/wheels
	$(BIN)/pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PYTHON) \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d benchmarks/wheels \
	  diffusers realesrgan addict future lmdb yapf spandrel einops tomesd peft facenet-pytorch==2.6.0
	$(BIN)/pip wheel -q -w benchmarks/wheels --no-deps --no-build-isolation basicsr==1.4.2
	du -sh benchmarks/wheels

clean:
	rm -rf $(VENV) out .kaggle-sim
