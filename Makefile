# Two commands on a fresh machine: `make demo` and `make test`.
PY := .venv/bin/python
DEMO_DIR := demo_runs
DEMO_FLAGS := --content-n 2 --style-n 2 --modality-n 2 --encoding-size 2 \
	--batch-size 512 --lr 1e-4 --train-steps 5001 --log-steps 1000 --num-eval-batches 1

.PHONY: demo test venv clean

venv: .venv/.installed

.venv/.installed: requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

demo: venv
	rm -rf $(DEMO_DIR)/mlp
	$(PY) main_mlp.py --model-dir $(DEMO_DIR) --model-id mlp --seed 0 --no-cuda $(DEMO_FLAGS)
	$(PY) main_mlp.py --model-dir $(DEMO_DIR) --model-id mlp --seed 1 --no-cuda --evaluate --load-args --num-eval-batches 1

test: venv
	$(PY) -m pytest

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
