#!/usr/bin/env bash
# Run a command in the HistoSynth image with the current folder mounted and a persistent cache volume.
set -euo pipefail
exec docker run --rm -it --gpus all --shm-size=8g \
    -v "$PWD":/workspace/histosynth -v histosynth-cache:/cache \
    -w /workspace/histosynth histosynth "$@"
