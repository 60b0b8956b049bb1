#!/bin/bash
# One prepared check of the CUDA path on a lent GPU (python3 there has torch,
# scikit-learn, pandas, matplotlib, tqdm):
#   1. simulation: train at the paper's sizes (batch 6144) and evaluate at the
#      default size (2 x 20,480 samples, kernel-ridge grid on the GPU);
#   2. image/text: a sweep of CPU-sized demo settings (generated data, encoding
#      size 4), run side by side on the one GPU, to choose `make demo-imgtxt`'s.
# Everything lands in $OUT (summary.txt, logs.tar.gz).
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
PY=${PY:-python3}
W=/tmp/cuda_check; rm -rf $W; mkdir -p $W/m
OUT=${OUT:-$W/out}; mkdir -p $OUT
S=$OUT/summary.txt
{ nvidia-smi -L; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } >>$S 2>&1
t0=$(date +%s)
gen() { $PY generate_m3di.py $W/d$1 --n-train 10000 --n-val 1000 --n-test 1000 --seed 0 \
          --image-size $1 --position-dependent-color --workers 6 --quiet > $W/gen$1.log 2>&1; }
gen 64 & gen 32 &
# Simulation on the GPU while the CPUs render.
s=$(date +%s)
timeout 120 $PY main_mlp.py --model-dir $W/m --model-id sim --seed 0 --train-steps 501 --log-steps 100 > $W/sim.train.log 2>&1
echo "sim train 501 steps batch 6144 rc=$? $(( $(date +%s) - s )) s" >>$S
s=$(date +%s)
timeout 150 $PY main_mlp.py --model-dir $W/m --model-id sim --seed 1 --evaluate --load-args > $W/sim.eval.log 2>&1
echo "sim evaluate default size rc=$? $(( $(date +%s) - s )) s" >>$S
tail -c 400 $W/sim.train.log | tr '\r' '\n' | tail -3 >>$S
wait
echo "data ready at $(( $(date +%s) - t0 )) s" >>$S
sweep() { name=$1; data=$2; shift 2
  s=$(date +%s)
  timeout 270 $PY main_imgtxt.py --datapath $W/$data --model-dir $W/m --model-id $name --seed 0 \
      --encoding-size 4 --workers 2 --log-steps 500 --checkpoint-steps 100000 "$@" > $W/$name.train.log 2>&1
  tr=$?; m=$(( $(date +%s) - s ))
  timeout 100 $PY main_imgtxt.py --datapath $W/$data --model-dir $W/m --model-id $name --seed 1 \
      --evaluate --load-args --workers 2 > $W/$name.eval.log 2>&1
  { echo "== $name $* (train rc=$tr ${m}s, eval rc=$?)"
    grep -E "object_shape|pos,|background_color|spotlight_pos|object_color," $W/m/$name/results.csv; } >$W/$name.summary 2>&1
}
sweep a64_t1   d64 --lr 3e-4 --tau 1.0 --train-steps 1800 &
sweep b64_t02  d64 --lr 3e-4 --tau 0.2 --train-steps 1800 &
sweep c64_lr1e3_t02 d64 --lr 1e-3 --tau 0.2 --train-steps 1800 &
sweep d32_t1   d32 --lr 3e-4 --tau 1.0 --train-steps 3500 &
sweep e32_t02  d32 --lr 3e-4 --tau 0.2 --train-steps 3500 &
sweep f32_lr1e3_t02 d32 --lr 1e-3 --tau 0.2 --train-steps 3500 &
sweep g32_lr1e3_t05 d32 --lr 1e-3 --tau 0.5 --train-steps 3500 &
sweep h32_b128_t02 d32 --batch-size 128 --lr 5e-4 --tau 0.2 --train-steps 2000 &
wait
cat $W/*.summary >>$S
echo "total $(( $(date +%s) - t0 )) s" >>$S
tar czf $OUT/logs.tar.gz -C $W $(cd $W && ls *.log m/*/results.csv m/*/args.json 2>/dev/null)
cat $S
