#!/bin/bash
# How many steps training seed 0 needs at the paper's latent sizes (blocks of 5,
# encoding size 5, the dims scale's CPU recipe), on a lent GPU. On the CPU, seed 0
# ends 50,001 steps with one content direction unlearned in both the p(chg) 1.0
# and 0.75 rows (REPRODUCTION.md). Here, side by side on the one GPU:
#   ctl50k    seed 0, p(chg) 1.0, 50,001 steps: does the deficit recur with the
#             GPU's own latent samples (the mixing draw is the same: numpy, seed 0)?
#   s0_p1     seed 0, p(chg) 1.0, N steps
#   s0_p075   seed 0, p(chg) 0.75, N steps
# N (at most 200,001) is chosen from the control's measured rate so that the
# whole script ends inside $BUDGET seconds. Each model is then evaluated as the
# runner does (4,096 pairs per set, evaluation seed +10,000) and analysed with
# directions.py. Everything lands in $OUT (summary.txt, logs.tar.gz).
set -u
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
PY=${PY:-python3}
BUDGET=${BUDGET:-540}       # seconds for the whole script
EVAL_S=${EVAL_S:-75}        # kept back for the evaluations and directions.py
CTL=${CTL:-50001}           # the control's steps (smaller only to try the script out)
W=/tmp/cuda_dims; rm -rf $W; mkdir -p $W/m
OUT=${OUT:-$W/out}; mkdir -p $OUT
S=$OUT/summary.txt
t0=$(date +%s)
{ nvidia-smi -L; $PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"; } >>$S 2>&1
# The dims scale's training flags, from the runner itself (the step count is chosen below).
DIMS=$($PY -c 'from experiments import SCALES, render
print(" ".join(render({**SCALES["dims"]["sim_train"], "--train-steps": None})))') || exit 1
left() { echo $(( BUDGET - EVAL_S - ($(date +%s) - t0) )); }
train() {  # id seed p(chg) steps
  timeout $(( $(left) > 1 ? $(left) : 1 )) $PY main_mlp.py --model-dir $W/m --model-id $1 --seed $2 --style-change-prob $3 \
      $DIMS --train-steps $4 > $W/$1.train.log 2>&1
  echo "$1: seed $2, p(chg) $3, $4 steps: train rc=$? at $(( $(date +%s) - t0 )) s" >>$S
}
finish() {  # id seed
  timeout 60 $PY main_mlp.py --model-dir $W/m --model-id $1 --seed $(( $2 + 10000 )) --evaluate --load-args \
      --num-eval-batches 1 > $W/$1.eval.log 2>&1
  timeout 30 $PY directions.py $W/m/$1 > $W/$1.dir.log 2>&1
}
steps_done() {  # the last step of a training's metrics.csv
  tail -n 1 $W/m/$1/metrics.csv 2>/dev/null | cut -d, -f1 | grep -E '^[0-9]+$' || echo 0
}
( train ctl50k 0 1.0 $CTL; finish ctl50k 0 ) &
# The control's rate alone, after start-up, chooses N.
while [ "$(steps_done ctl50k)" -lt 3001 ] && [ $(( $(date +%s) - t0 )) -lt 120 ]; do sleep 2; done
a=$(date +%s); a_step=$(steps_done ctl50k); sleep 20; b_step=$(steps_done ctl50k)
rate=$(( (b_step - a_step) / ($(date +%s) - a) ))
# Three runs share the GPU from here on: take 60 % of the lone rate as each one's.
N=$(( rate * 6 / 10 * $(left) ))
# At least 75,001: a run stopped at the budget still logs its content R² every 1,000 steps.
for n in 200001 150001 100001 75001; do [ $N -ge $n ] && break; done
N=${N_FORCE:-$n}
echo "lone rate ${rate} steps/s (steps $a_step..$b_step); N = $N" >>$S
( train s0_p1 0 1.0 $N; finish s0_p1 0 ) &
( train s0_p075 0 0.75 $N; finish s0_p075 0 ) &
wait
for id in ctl50k s0_p1 s0_p075; do
  echo "== $id"; tail -n 3 $W/m/$id/metrics.csv 2>/dev/null
  grep -E ",(c|s|m1|m2)," $W/m/$id/results.csv 2>/dev/null
  grep ",c,canonical," $W/m/$id/directions.csv 2>/dev/null
done >>$S 2>&1
echo "total $(( $(date +%s) - t0 )) s" >>$S
tar czf $OUT/logs.tar.gz -C $W $(cd $W && ls *.log m/*/metrics.csv m/*/results.csv m/*/args.json \
    m/*/directions.csv m/*/evaluation.json 2>/dev/null)
cat $S
