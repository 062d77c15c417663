#!/usr/bin/env bash
# The desktop-JVM check of the binding under AddressSanitizer: the JNI glue built with -fsanitize=address
# against runtime/build-asan (make native-asan), libasan and libstdc++ preloaded into the JVM (the java
# launcher links no libstdc++, so ASan's __cxa_throw interceptor needs it loaded first). Not part of make
# test (it takes several minutes); run it by hand after make native-asan.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
asan_build="$root/runtime/build-asan"
out="$root/android_demo/build/desktop-asan"
[ -f "$asan_build/libedgecpm.so" ] || { echo "error: $asan_build/libedgecpm.so is missing; run make native-asan" >&2; exit 2; }
bash "$root/android_demo/desktop/build.sh"   # the classes (and the plain library) as usual
jdk="${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")}"
mkdir -p "$out"
${CXX:-g++} -std=c++17 -O1 -g -fsanitize=address -fno-omit-frame-pointer -fPIC -shared -Wall -Wextra -Werror \
  -I"$jdk/include" -I"$jdk/include/linux" -I"$root/runtime/include" \
  "$root/android_demo/edgecpm-android/src/main/cpp/edgecpm_jni.cpp" -o "$out/libedgecpm_jni.so" \
  -L"$asan_build" -ledgecpm -Wl,-rpath,"$asan_build"
export EDGECPM_ANDROID_JNI="$out/libedgecpm_jni.so"
export EDGECPM_ANDROID_PRELOAD="$(${CXX:-g++} -print-file-name=libasan.so) $(${CXX:-g++} -print-file-name=libstdc++.so.6)"
export EDGECPM_NATIVE_BUILD="$asan_build"
cd "$root" && "${PY:-.venv/bin/python}" -m pytest -q -x -p no:cacheprovider tests/test_android_bridge.py -k java_binding
