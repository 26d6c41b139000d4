# Two commands do all set-up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Telemetry off everywhere: nothing here may phone home.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install run test remote exps offline-plots bench bench-faces bench-memory bench-ablation bench-labels bench-tuning bench-motion bench-dask gpu-check bench-ddp clean

# torch first and pinned: an unpinned torch drags in gigabytes of CUDA wheels.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

run: install  ## the whole pipeline on the embedded synthetic data
	$(BIN)/dvc repro

test: install  ## the test suite (exit 5, "no tests collected", is not a failure)
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; else exit $$rc; fi

bench: install  ## throughput figures (ingest frames/s, landmark vs Haar front end vs raw decode, stage wall times)
	$(BIN)/python benchmarks/bench_data.py

bench-faces: install  ## face front end: detection rate dlib vs Haar, landmark error, portrait jitter, mer predict real-time factor
	$(BIN)/python benchmarks/bench_faces.py

bench-memory: install  ## peak RSS of ingest on a short video vs one 10× longer (streaming check)
	$(BIN)/python benchmarks/bench_ingest_memory.py

bench-ablation: install  ## the ablation over pre-training × fine-tuning seeds on the reported benchmark (after `make run`)
	$(BIN)/python benchmarks/bench_ablation.py --benchmark reported --pretrain-seeds 0 1 2 --set 'finetune.seeds=[0, 1, 2]'

bench-labels: install  ## label-scarce learning curve on the reported benchmark: 12.5, 25 and 50 % of each fold's training labels (after `make run`)
	for share in 0.125 0.25 0.5; do $(BIN)/python benchmarks/bench_ablation.py --benchmark reported --pretrain-seeds 0 1 2 \
	  --set 'finetune.seeds=[0, 1, 2]' --set finetune.train_fraction=$$share \
	  --set 'finetune.ablation=[scratch_e2e, ma2mi_e2e, ma2mi_probe, flow_strain_lr, flow_cnn]' \
	  --out reports/bench_reported_labels$$share.json || exit 1; done

bench-tuning: install  ## the same ablation on the tuning benchmark, where every setting was chosen
	$(BIN)/python benchmarks/bench_ablation.py --benchmark tuning $(TUNING_ARGS)

bench-motion: install  ## Farneback vs DIS (and magnification): ms per pair, flow-baseline UF1 on the tuning benchmark
	$(BIN)/python benchmarks/bench_motion.py

bench-dask: install  ## process pool vs a local Dask cluster: ingest clips/s (1 and 2 workers), LOSO wall time
	$(BIN)/python benchmarks/bench_dask.py $(DASK_ARGS)

gpu-check: install  ## on a CUDA machine, < 8 min: pre-training clips/s (compiled, eager), MFU, peak memory, data wait, CUDA fine-tuning (exits 0 without CUDA)
	$(BIN)/python benchmarks/bench_gpu.py --eager-too --json reports/gpu_check.json

bench-ddp: install  ## DDP on the CPU (after `make run`): 2 torchrun processes vs 1 with the doubled batch, losses and times
	$(BIN)/python benchmarks/bench_ddp.py

clean:
	rm -rf data reports .dvc/cache .dvc/tmp

# A folder outside the checkout (a disk or a mount every machine sees), so `make clean` and a
# fresh clone leave it alone. `--local` writes .dvc/config.local: the path is this machine's.
DVC_REMOTE ?= $(HOME)/.local/share/mer/dvc-remote

remote:  ## a local-folder DVC remote for this checkout (DVC_REMOTE=dir), for `dvc push` and `dvc pull`
	mkdir -p "$(DVC_REMOTE)"
	dvc remote add --local --default --force local "$(abspath $(DVC_REMOTE))"

# `dvc exp show` lists every metric and param (~300 columns): these are the ones people compare.
EXP_DROP := (per_class|per_dataset|oracle_best_epoch_not_a_result|composite_3class|ceiling|tuning|variants|shipped)\..*|.*_std$$|(accuracy|uar|clips|seeds|variant)$$|(models|reports|data|mer_core)/.*
EXP_KEEP := (uf1|uf1_std|uar|accuracy|composite_3class\.uf1|shipped\.uf1_margin|shipped\.strongest_rival|variants\.[a-z0-9_]+\.uf1)$$

exps: install  ## experiments side by side: headline metrics, each ablation row's UF1, the params that differ
	$(BIN)/dvc exp show --md --only-changed --drop '$(EXP_DROP)' --keep '$(EXP_KEEP)'

# `dvc plots show` and `dvc plots diff` write pages that load Vega from a CDN: blank offline.
# This fetches Vega once with npm and points DVC (.dvc/config.local) at a page template
# that carries it inline.
offline-plots: install  ## make DVC's plot pages render offline (needs npm once)
	@set -e; tmp=$$(mktemp -d); cd $$tmp; \
	for p in vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2; do npm pack --silent $$p >/dev/null; done; \
	{ echo '<!DOCTYPE html><html><head><meta charset="utf-8"><title>DVC Plot</title>'; \
	  for f in vega vega-lite vega-embed; do echo '<script>'; \
	    tar -xzOf $$f-[0-9]*.tgz package/build/$$f.min.js | sed 's#</script#<\\/script#g'; echo '</script>'; done; \
	  echo '<style>table { border-spacing: 15px; }</style></head><body>{plot_divs}</body></html>'; \
	} > $(CURDIR)/.dvc/tmp/plots-offline.html; cd $(CURDIR); rm -rf $$tmp
	$(BIN)/dvc config --local plots.html_template tmp/plots-offline.html
	@echo "dvc plots show/diff now render offline (template .dvc/tmp/plots-offline.html)"
