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

# Directory outputs hardlinked into the cache rather than copied (DVC copies them under the
# default reflink,hardlink,copy): full-data features of one run take gigabytes, and a copy
# would double them (a local setting, not committed; copy where links cannot be made).
dvc config --local cache.type hardlink,copy

dvc repro split  # the dataset and its split, which the bench reads too

# The floors of this machine; measured again when the run resumes on another kind of machine.
machine=$(python -c "from ferstudy.core.machine import cpu_kind; print(cpu_kind())")
if [ "$(cat .ferstudy/bench.done 2>/dev/null)" != "$machine" ]; then
    stamp "start bench"
    ferstudy bench --out bench/floors.json
    echo "$machine" >.ferstudy/bench.done
    stamp "end bench"
fi

seeds=$(python -c "import yaml; print(*yaml.safe_load(open('params.yaml'))['seeds'])")
runs=${*:-$(python -c "import yaml; print(*yaml.safe_load(open('params.yaml'))['runs'])")}
[ -n "$seeds" ] && [ -n "$runs" ] || { echo "no runs or seeds in params.yaml" >&2; exit 2; }
for run in $runs; do
    for seed in $seeds; do
        stamp "start evaluate@$run-$seed"
        dvc repro "evaluate@$run-$seed"
        stamp "end evaluate@$run-$seed"
    done
done
stamp "start dvc repro"
dvc repro
stamp "end dvc repro"
dvc status
