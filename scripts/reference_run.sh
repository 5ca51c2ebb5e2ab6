#!/usr/bin/env bash
# The reference run: the floors of this machine (`ferstudy bench`), then every run of
# params.yaml through `dvc repro`, one <run>-<seed> at a time in the order given (default:
# params.yaml's `runs`), then everything else (heads, fine-tuning, export, report).
# Rerun it after an interruption: finished stages are skipped, a killed feature extraction or
# training resumes from its last checkpoint. Each step's start and end go to
# .ferstudy/reference_run.log, each stage's time to .ferstudy/timings.jsonl.
#
#   FER2013_PATH=/path/to/fer2013.zip bash scripts/reference_run.sh [run ...]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .ferstudy
log=.ferstudy/reference_run.log
stamp() { echo "$(date -u +%FT%TZ) $*" >>"$log"; }

# Directory outputs hardlinked into the cache rather than copied: full-data features of one
# run take gigabytes, and a copy would double them (local setting, not committed).
dvc config --local cache.type hardlink

dvc repro split  # the dataset and its split, which the bench reads too

# The floors of this machine; measured again when the run resumes on another kind of machine.
flags=$(grep -m1 '^flags' /proc/cpuinfo | grep -o -w -E 'avx2|avx512f|avx512_bf16|amx_bf16' | xargs)
machine="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $flags"
if [ "$(cat .ferstudy/bench.done 2>/dev/null)" != "$machine" ]; then
    stamp "start bench ($machine)"
    ferstudy bench --out bench/floors.json
    echo "$machine" >.ferstudy/bench.done
    stamp "end bench"
fi

read -r -a seeds < <(python -c "import yaml; print(*yaml.safe_load(open('params.yaml'))['seeds'])")
if [ "$#" -gt 0 ]; then
    runs=("$@")
else
    read -r -a runs < <(python -c "import yaml; print(*yaml.safe_load(open('params.yaml'))['runs'])")
fi
for run in "${runs[@]}"; do
    for seed in "${seeds[@]}"; do
        stamp "start evaluate@$run-$seed"
        dvc repro "evaluate@$run-$seed"
        stamp "end evaluate@$run-$seed"
    done
done
stamp "start dvc repro"
dvc repro
stamp "end dvc repro"
dvc status
