#!/usr/bin/env bash
# The native tests against the AddressSanitizer build (make native-asan). edgecpm-run is an ASan
# executable; the ctypes tests load the ASan libedgecpm into Python, so the ASan runtime is preloaded.
# Leak checks are off: the Python interpreter (and onnxruntime's global state) keep memory at exit by design.
set -euo pipefail
PY="${1:-.venv/bin/python}"
export EDGECPM_NATIVE_BUILD="${EDGECPM_NATIVE_BUILD:-runtime/build-asan}"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:halt_on_error=1:print_summary=1"
asan="$(${CXX:-g++} -print-file-name=libasan.so) $(${CXX:-g++} -print-file-name=libstdc++.so.6)"
LD_PRELOAD="$asan" "$PY" -m pytest -q -x -p no:cacheprovider tests/test_native_runtime.py tests/test_native_npu.py tests/test_native_ops.py "${@:2}"
