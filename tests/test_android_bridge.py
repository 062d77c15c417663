"""The Android binding (android_demo/edgecpm-android: Java API + JNI) on a desktop JVM, driving the real
libedgecpm: `make android-check` builds it (android_demo/desktop/build.sh) and runs this file. The Java side
(BridgeCheck) opens the default artifact, unchanged, and checks it against what the Python CLI and runtime say."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from native import LIB

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "android_demo" / "build" / "desktop"
# android_demo/desktop/asan-check.sh points these at an AddressSanitizer build and its runtime to preload.
JNI_LIB = Path(os.environ.get("EDGECPM_ANDROID_JNI") or OUT / "libedgecpm_jni.so")
PRELOAD = os.environ.get("EDGECPM_ANDROID_PRELOAD")
PROMPT = "The capital of France is"
# VmRSS growth allowed over 20 open/generate/chat/snapshot/close cycles, after 3 warm-up cycles. One leaked
# model is >= 110 MB (its weights) and one leaked KV state at the default 4096 context is ~90 MB, so 48 MB
# still catches any leaked model or state, and a per-cycle leak above ~2.4 MB, while leaving room for
# glibc arenas and onnxruntime's per-session allocations settling (measured growth: see the README).
RSS_BOUND_MB = 48

BUILT = JNI_LIB.is_file() and (OUT / "classes" / "ai" / "edgecpm" / "BridgeCheck.class").is_file()
pytestmark = pytest.mark.skipif(not (BUILT and LIB.is_file()) and not os.environ.get("CI"),
                                reason="Android binding not built for the desktop: run `make android-check`")


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    return str(Path(home) / "bin" / "java") if home else "java"


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    """What the Java side must reproduce, from the Python CLI and runtime on the same artifact."""
    from edgecpm.app.defaults import default_artifact
    from edgecpm.contract import load_manifest
    from edgecpm.runtime import ChatSession, load

    art = default_artifact()
    d = tmp_path_factory.mktemp("android-expected")
    cli = subprocess.run([sys.executable, "-m", "edgecpm", "generate", str(art), "--temp", "0", "-m", "16", "-p",
                          PROMPT, "--local-only"], capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout.endswith("\n")
    engine, tok = load(art)
    chat = ChatSession(engine, tok, system="Be brief.")
    m = load_manifest(art, verify=False)
    files = {"prompt.txt": PROMPT, "greedy16.txt": cli.stdout[:-1],
             "chat1.txt": chat.ask("Hello world", max_tokens=10),
             "chat2.txt": chat.ask("how are you today?", max_tokens=10),
             "memory_bytes.txt": str(m.memory_bytes(m.runtime_context(None))), "rss_bound_mb.txt": str(RSS_BOUND_MB)}
    for name, text in files.items():
        (d / name).write_text(text, encoding="utf-8")
    return d, art


def test_java_binding_on_the_default_artifact(expected):
    d, art = expected
    # -Xcheck:jni: the JVM checks every JNI call (pending exceptions, local refs, types) and reports misuse.
    # A fixed, pre-touched 64 MB heap keeps Java heap growth out of the VmRSS measurement.
    cmd = [_java(), "-Xcheck:jni", "-Xms64m", "-Xmx64m", "-XX:+AlwaysPreTouch", f"-Dedgecpm.jni.library={JNI_LIB}",
           "-cp", str(OUT / "classes"), "ai.edgecpm.BridgeCheck", str(d), str(art)]
    env = dict(os.environ)
    if PRELOAD:  # the JVM's own SIGSEGV use and its exit-time memory are not errors
        env.update(LD_PRELOAD=PRELOAD,
                   ASAN_OPTIONS="detect_leaks=0:handle_segv=0:allow_user_segv_handler=1:halt_on_error=1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    out = r.stdout + r.stderr
    print(out)
    assert r.returncode == 0, out
    assert re.search(r"^12 passed, 0 failed$", r.stdout, re.M), out
    # e.g. "WARNING: JNI local refs: 33, exceeds capacity: 32" when the callback loop keeps its local refs
    # (seen when DeleteLocalRef is removed from on_piece), "WARNING in native method: ..." for a pending exception
    jni_complaints = [line for line in out.splitlines() if re.search(r"^WARNING|WARNING in native method|FATAL ERROR"
                                                                      r"|JNI local refs|exception pending", line)]
    assert not jni_complaints, jni_complaints
    assert "AddressSanitizer" not in out, out


def test_app_kotlin_and_gradle_scripts_parse():
    """No Kotlin compiler or Android SDK here: the app's .kt and the Gradle .kts files are at least checked to
    be syntactically valid Kotlin (tree-sitter's Kotlin grammar). Type errors still need Android Studio."""
    if os.environ.get("CI"):
        import tree_sitter as ts
        import tree_sitter_kotlin as tk
    else:
        ts = pytest.importorskip("tree_sitter")
        tk = pytest.importorskip("tree_sitter_kotlin")
    parser = ts.Parser(ts.Language(tk.language()))
    files = sorted((ROOT / "android_demo").rglob("*.kt")) + sorted((ROOT / "android_demo").rglob("*.kts"))
    files = [f for f in files if "build" not in f.relative_to(ROOT / "android_demo").parts]
    assert len(files) >= 8, files
    bad = {}
    for f in files:
        stack = [parser.parse(f.read_bytes()).root_node]
        while stack:
            n = stack.pop()
            if n.type == "ERROR" or n.is_missing:
                bad.setdefault(str(f.relative_to(ROOT)), []).append((n.start_point, n.text[:60]))
            stack.extend(n.children)
    assert not bad, bad
