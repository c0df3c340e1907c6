# onnxedge — the two commands a user needs: `make export` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
OUT    ?= build/smile_cnn
STAMP  := $(VENV)/.onnxedge-installed

.PHONY: export test check lint format parity bench zoo import-zoo testdata-zoo parity-matrix clean venv train edge docs

venv: $(STAMP)

# One environment with the export side, the dev tools, the openvino engine and Ray Data (so CI
# runs their tests rather than skipping them); torch pinned through constraints.txt.
# The plain onnxruntime only: a .venv made when onnxedge required onnxruntime-gpu loses the GPU
# build first (the two write the same files; pyproject.toml's `cuda` extra says why).
# PYTHONWARNINGS: setuptools warns at every editable install that a folder named like a package
# may shadow it (our folders are mapped by package-dir on purpose); errors still print.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	! $(PIP) show --quiet onnxruntime-gpu 2>/dev/null || $(PIP) uninstall --quiet -y onnxruntime-gpu
	PYTHONWARNINGS=ignore::UserWarning $(PIP) install --quiet -c constraints.txt -e '.[export,dev,openvino,ray]'
	touch $@

# export runs `onnxedge check` on the bundle itself (and refuses to write one that fails it), so
# the check's lines are printed once; -v on either command shows its progress.
export: $(STAMP)
	$(BIN)/onnxedge export --model smile_cnn --head avgpool --exporter dynamo --out $(OUT) --force
	$(BIN)/onnxedge parity $(OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

check: $(STAMP) lint
	$(BIN)/onnxedge check $(OUT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

parity: $(STAMP)
	$(BIN)/onnxedge parity $(OUT)

# Train the smile model on synthetic faces (CelebA's layout, drawn here: no download),
# export the best epoch as a bundle, check it, compare it with PyTorch and score the test split.
# FACES and TRAINED are what `make edge` reads; FACES_COUNT and TRAIN_ARGS change the run.
FACES       ?= build/faces
TRAINED     ?= build/smile_trained
CHECKPOINT  ?= build/smile_trained.safetensors
FACES_COUNT ?= 6000
FACES_SEED  ?= 0
TRAIN_ARGS  ?=
train: $(STAMP)
	$(BIN)/onnxedge data synth --out $(FACES) --count $(FACES_COUNT) --seed $(FACES_SEED) --force
	$(BIN)/onnxedge train --data $(FACES) --out $(CHECKPOINT) --force --json build/smile_trained.train.json $(TRAIN_ARGS)
	$(BIN)/onnxedge export --checkpoint $(CHECKPOINT) --out $(TRAINED) --force \
		--images $(FACES)/img_align_celeba
	$(BIN)/onnxedge check $(TRAINED)
	$(BIN)/onnxedge parity $(TRAINED)
	$(BIN)/onnxedge evaluate $(TRAINED) --data $(FACES) --split test --min-accuracy 97 \
		--json build/smile_trained.eval.json

# The trained bundle's edge variants (int8, fp16, the ORT format, the int8 variants that deal
# with the first conv's 3 input channels: int8-conv1-fp32, int8-pad4, and fp32-u8 and int8-u8,
# which take the decoded uint8 pixels), each gated on the held-out faces of FACES (agreement with
# fp32 >= 99.5%, accuracy drop <= 0.5 pp), and the fast decode (`--decode fast`) gated the same
# way against the exact one; a variant or a decode that misses fails the target. Runs
# `make train` first only where TRAINED is not there yet.
EDGE      ?= build/smile_edge
EDGE_ARGS ?=
edge: $(STAMP)
	test -f $(TRAINED)/manifest.json || $(MAKE) train
	$(BIN)/onnxedge optimize $(TRAINED) --data $(FACES) --out $(EDGE) --force \
		--int8 --fp16 --ort --int8-first-conv --uint8-input --fast-decode \
		--json $(EDGE).optimize.json $(EDGE_ARGS)
	$(BIN)/onnxedge check $(EDGE)/variants/int8.onnx
	$(BIN)/onnxedge evaluate $(EDGE) --data $(FACES) --split test --variant int8-ort

# The figures this project aims at (docs/BENCHMARKS.md): the CPU ones set for the 2-core
# development machine, the CUDA ones for an H100; the code holds none. Override to judge others:
# make bench BENCH_TARGETS="--targets mine.toml"; add --fail-on-miss to fail on a MISSED one.
# The int8 and OpenVINO ones need a bundle with the int8 variant and the
# openvino extra: make bench BENCH_BUNDLE=build/smile_edge (elsewhere they are NOT MEASURED, with
# the reason); BENCH_IMAGES=DIR adds the from-files rows (decode + preprocess + inference,
# --decode fast, batch 64) and FILES_TARGETS: files to labels against the same model's
# throughput in the same run, set for a 2-core CPU with 178x218 JPEGs (docs/BENCHMARKS.md).
BENCH_BUNDLE ?= $(OUT)
BENCH_IMAGES ?=
FILES_TARGETS ?= \
	--target 'onnxruntime[from-files,int8]/onnxruntime[int8]>=0.6@64' \
	--target 'openvino[from-files,int8]/openvino[int8]>=0.6@64' \
	--target 'onnxruntime[from-files]/onnxruntime>=0.8@64'
BENCH_TARGETS ?= \
	--target 'onnxruntime/torch-eager>=3.5@64' \
	--target 'onnxruntime/torch-eager>=3@1' \
	--target 'onnxruntime/torch-compile>=1.5@64' \
	--target 'onnxruntime[int8]/onnxruntime>=3@64' \
	--target 'onnxruntime[int8]/onnxruntime>=2.5@1' \
	--target 'openvino[int8]/onnxruntime>=3@64' \
	--target 'openvino[int8]/onnxruntime>=2.5@1' \
	--target 'openvino/onnxruntime>=0.95@64' \
	--target 'cuda:onnxruntime[cuda-graph] p50<=50us@1' \
	--target 'cuda:onnxruntime[device-resident]/torch-eager[device-resident]>=2@max'

bench: $(STAMP)
	$(BIN)/onnxedge bench $(BENCH_BUNDLE) $(BENCH_TARGETS) \
		$(if $(BENCH_IMAGES),--images $(BENCH_IMAGES) --decode fast --images-batch-size 64 $(FILES_TARGETS)) \
		--json build/bench.json --markdown build/bench.md --plot build/bench.png

# Not part of `make test`: real models (pytorchcv, random weights) and the hand-written families
# through export, check, parity and bench; several minutes. pytorchcv with --no-deps: its metadata
# asks for torchvision, which would bring another torch (see the zoo extra in pyproject.toml).
ZOO_PYTORCHCV := pytorchcv==0.0.74
zoo: $(STAMP)
	$(PIP) install --quiet --no-deps '$(ZOO_PYTORCHCV)'
	$(BIN)/python -m onnxedge.export.zoo --out docs/ZOO.md --bundles build/zoo

# Not part of `make test`: the import route, as users bring models: pytorchcv's architectures
# exported by torch.onnx.export itself at batch 1 (dynamo and torchscript), then `onnxedge
# import` and `onnxedge parity`, into docs/IMPORT_ZOO.md; long (float64 references).
import-zoo: $(STAMP)
	$(PIP) install --quiet --no-deps '$(ZOO_PYTORCHCV)'
	$(BIN)/python -m onnxedge.export.import_zoo --out docs/IMPORT_ZOO.md --bundles build/import_zoo

# Not part of `make test` (its GoogLeNet row is): the classifiers the onnx package ships as test
# data (onnx/backend/test/data/light), given random weights, through `onnxedge import` and
# `onnxedge parity`, into docs/TESTDATA_ZOO.md; the fully connected heads must be refused.
testdata-zoo: $(STAMP)
	$(BIN)/python -m onnxedge.export.testdata_zoo --out docs/TESTDATA_ZOO.md --bundles build/testdata_zoo

# Not part of `make test`: parity's false alarms (every zoo model and smile_cnn, both exporters,
# default and ImageNet preprocessing, the CPU EP and OpenVINO f32) and misses (perturbed layers,
# biases, channels and mean) measured, into docs/PARITY.md's matrix; long (run it with nice).
# PARITY_CHECKPOINT=path adds smile_cnn with trained weights.
parity-matrix: $(STAMP)
	$(PIP) install --quiet --no-deps '$(ZOO_PYTORCHCV)'
	$(BIN)/python -m onnxedge.export.parity_matrix --out docs/PARITY.md \
		--bundles build/parity_matrix --json build/parity_matrix.json \
		$(if $(PARITY_CHECKPOINT),--checkpoint $(PARITY_CHECKPOINT))

# The API reference (pdoc): the public names of onnxedge.runtime and onnxedge.export (their
# __all__), not their submodules, as HTML in build/api (not committed: build/ is ignored).
# tests/test_api_docs.py builds the same modules into a temporary folder.
API_DIR     ?= build/api
API_MODULES := onnxedge.runtime onnxedge.export '!onnxedge.runtime.' '!onnxedge.export.'
docs: $(STAMP)
	$(BIN)/pdoc -o $(API_DIR) $(API_MODULES)
	@echo "wrote $(API_DIR)/index.html"

clean:
	rm -rf build .pytest_cache .ruff_cache *.egg-info
