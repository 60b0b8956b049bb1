# Two commands on a fresh machine: `make demo` and `make test`.
PY := .venv/bin/python
DEMO_DIR := demo_runs
DEMO_FLAGS := --content-n 2 --style-n 2 --modality-n 2 --encoding-size 2 \
	--batch-size 512 --lr 1e-4 --train-steps 5001 --log-steps 1000 --num-eval-batches 1

# Image/text at CPU size: a generated 64 px Multimodal3DIdent, encoding size 4.
IMGTXT_DATA := $(DEMO_DIR)/m3di64
# The recipe and why: REPRODUCTION.md, "Quick-scale settings, and why".
IMGTXT_FLAGS := --encoding-size 4 --batch-size 64 --lr 1e-3 --tau 0.1 --train-steps 4001 \
	--precision bf16 --lr-schedule cosine --warmup-steps 200 \
	--log-steps 500 --checkpoint-steps 1000 --workers 1

.PHONY: demo demo-imgtxt test test-slow test-cluster venv clean

venv: .venv/.installed

# torch 2.14.1 from PyPI is a CUDA build (it runs on CPU too): a new .venv takes about 6 GB.
VENV_FREE_GB := 6.5

.venv/.installed: requirements.txt
	@test -x $(PY) || python3 -c "import os, shutil, sys; free = shutil.disk_usage('.').free / 2**30; \
	sys.exit(0 if free >= $(VENV_FREE_GB) else 'make: .venv needs about $(VENV_FREE_GB) GB free ' \
	f'(torch 2.14.1 is a CUDA build); {free:.1f} GB is free in {os.getcwd()}')"
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

demo: venv
	rm -rf $(DEMO_DIR)/mlp
	$(PY) main_mlp.py --model-dir $(DEMO_DIR) --model-id mlp --seed 0 --no-cuda $(DEMO_FLAGS)
	$(PY) main_mlp.py --model-dir $(DEMO_DIR) --model-id mlp --seed 1 --no-cuda --evaluate --load-args --num-eval-batches 1

demo-imgtxt: venv
	rm -rf $(IMGTXT_DATA) $(DEMO_DIR)/imgtxt
	$(PY) generate_m3di.py $(IMGTXT_DATA) --n-train 10000 --n-val 1000 --n-test 1000 --seed 0 \
		--image-size 64 --position-dependent-color --workers 2
	$(PY) main_imgtxt.py --datapath $(IMGTXT_DATA) --model-dir $(DEMO_DIR) --model-id imgtxt \
		--seed 1 --no-cuda $(IMGTXT_FLAGS)
	$(PY) main_imgtxt.py --datapath $(IMGTXT_DATA) --model-dir $(DEMO_DIR) --model-id imgtxt \
		--seed 2 --no-cuda --evaluate --load-args --workers 1

# The suite in two parts: `make test` leaves out the tests marked slow (over 15 s each on one
# core: killed and resumed processes, two-process DDP, submitit), which `make test-slow` runs.
# One thread per process unless OMP_NUM_THREADS says otherwise: the tests' models are tiny,
# and several test processes (DDP, kills and resumes) would otherwise contend for the cores.
PYTEST := OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest

test: venv
	$(PYTEST) -m "not cluster and not slow"

test-slow: venv
	$(PYTEST) -m "slow and not cluster"

# The SLURM launcher on a real one-node cluster of this machine (root, Debian; installs
# SLURM, munge and MariaDB on first use), with accounting and without: docs/cluster.md.
# The two clusters' tests run at once: they mostly wait on SLURM (scheduling, requeues).
CLUSTER_TEST := CLUSTER_REQUIRED=1 OMP_NUM_THREADS=1 $(PY) -m pytest -p no:cacheprovider -m cluster tests/test_cluster.py

test-cluster: venv
	tests/slurm_cluster.sh accounting
	tests/slurm_cluster.sh plain
	$(CLUSTER_TEST) -k plain --basetemp=/tmp/test-cluster-plain & plain=$$!; \
	$(CLUSTER_TEST) -k accounting --basetemp=/tmp/test-cluster-accounting; accounting=$$?; \
	wait $$plain && exit $$accounting

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
