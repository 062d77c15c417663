#!/usr/bin/env bash
# Desktop build of the Android binding (make android-check): the JNI C++ against the JDK's jni.h and the
# Linux libedgecpm (runtime/build, made by `make native`), and the Java API + BridgeCheck with javac.
# Output: android_demo/build/desktop/{libedgecpm_jni.so,classes/}. No Android SDK or NDK is involved.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"     # android_demo/
root="$(cd "$here/.." && pwd)"
native="${EDGECPM_NATIVE_BUILD:-$root/runtime/build}"
out="$here/build/desktop"
lib="$here/edgecpm-android/src/main"
[ -f "$native/libedgecpm.so" ] || { echo "error: $native/libedgecpm.so is missing; run make native" >&2; exit 2; }
jdk="${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")}"
[ -f "$jdk/include/jni.h" ] || { echo "error: no jni.h under $jdk/include; set JAVA_HOME to a JDK" >&2; exit 2; }
mkdir -p "$out/classes"
# -O2, no LTO: the build machine is small. -Werror keeps the glue warning-free.
${CXX:-g++} -std=c++17 -O2 -fPIC -shared -Wall -Wextra -Werror -fvisibility=hidden \
  -I"$jdk/include" -I"$jdk/include/linux" -I"$root/runtime/include" \
  "$lib/cpp/edgecpm_jni.cpp" -o "$out/libedgecpm_jni.so" \
  -L"$native" -ledgecpm -Wl,-rpath,"$native" -Wl,--no-undefined
# The Java API must compile without android.* (it is what a desktop JVM and the app share).
if grep -rn "import android\." "$lib/java" >/dev/null; then echo "error: android.* imported in $lib/java" >&2; exit 2; fi
# minSdk 24: javac here compiles against Java 8's library, not Android's, so refuse by name the Java library
# APIs Android added later (java.nio.file/java.time 26, Cleaner 33, List.of/Map.of/Set.of 30, Java 11 String
# methods 33, InputStream.readAllBytes 33).
late='java\.nio\.file|java\.time|java\.lang\.ref\.Cleaner|\b(List|Map|Set)\.of\(|\.(isBlank|strip|repeat|lines)\(|readAllBytes\('
if grep -rnE "$late" "$lib/java"; then echo "error: an API above minSdk 24 in $lib/java (above)" >&2; exit 2; fi
rm -rf "$out/classes" && mkdir -p "$out/classes"
"$jdk/bin/javac" -Xlint:all -Werror --release 8 -encoding UTF-8 -d "$out/classes" \
  "$lib"/java/ai/edgecpm/*.java "$here"/edgecpm-android/src/test/java/ai/edgecpm/BridgeCheck.java
echo "built $out/libedgecpm_jni.so and $out/classes"
