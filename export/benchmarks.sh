#!/bin/bash
# The performance workloads of the README's "Measured" table: random checkpoints shaped like the real
# models (weights do not change speed) -> edgecpm int4 artifacts, next to llama.cpp Q4_0 GGUFs.
# Run from the repo root after `make test` (needs torch + transformers); OUT defaults to /tmp/edgecpm-bench.
set -euo pipefail
OUT=${OUT:-/tmp/edgecpm-bench}
mkdir -p "$OUT"
source .venv/bin/activate
TOK=$(python -c "from edgecpm.defaults import default_gguf; print(default_gguf())")  # random models ship none
for P in qwen3.5-2b lfm2-1.2b minimax-lightning-2b llama-1b; do
  [ -d "$OUT/$P" ] || python ../shared/peers/make_random_model.py "$P" "$OUT/$P"
  /usr/bin/time -v edgecpm export "$OUT/$P" -o "$OUT/$P-int4" --tokenizer "$TOK"
done
edgecpm export "$OUT/qwen3.5-2b" -o "$OUT/qwen3.5-2b-int4-g64" --q-group-size 64 --tokenizer "$TOK"
for A in qwen3.5-2b-int4 qwen3.5-2b-int4-g64 lfm2-1.2b-int4 minimax-lightning-2b-int4; do
  edgecpm bench "$OUT/$A" --threads 2 --prompt-lengths 512 --decode-tokens 64 --runs 2
done
