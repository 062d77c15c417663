package ai.edgecpm;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Desktop-JVM check of the Android binding (ai.edgecpm over JNI over libedgecpm), run by
 * tests/test_android_bridge.py through `make android-check`. No JUnit here (no Maven registry): a plain main
 * that prints one line per check and "N passed, N failed", and exits 1 when a check fails.
 *
 * usage: BridgeCheck EXPECTED_DIR ARTIFACT
 *   EXPECTED_DIR holds, written by the pytest side from the Python runtime and CLI:
 *   prompt.txt, greedy16.txt (edgecpm generate --temp 0 -m 16), chat1.txt, chat2.txt (ChatSession, 10 tokens),
 *   memory_bytes.txt (Manifest.memory_bytes at the runtime context), rss_bound_mb.txt
 */
public final class BridgeCheck {
  private static int passed, failed;
  private static File expected;
  private static String art;

  interface Check {
    void run() throws Exception;
  }

  public static void main(String[] args) throws Exception {
    expected = new File(args[0]);
    art = args[1];
    System.out.println("libedgecpm " + Edgecpm.version() + ", artifact " + art);
    check("greedy 16 tokens equal `edgecpm generate --temp 0 -m 16`", BridgeCheck::greedy);
    check("streaming pieces arrive in order, are whole UTF-8 and join to the text", BridgeCheck::streaming);
    check("stop() from the callback ends the generation", BridgeCheck::stopFromCallback);
    check("stop() from another thread ends the generation", BridgeCheck::stopFromThread);
    check("snapshot/restore gives the same continuation twice (== fresh)", BridgeCheck::snapshot);
    check("chat reuses the state and equals the Python ChatSession; respond() == a chat turn; add() keeps reuse", BridgeCheck::chat);
    check("a bad path throws EdgecpmException with the C message; the JVM goes on", BridgeCheck::badPath);
    check("context overflow is EDGECPM_ERR_CONTEXT_OVERFLOW; invalid Unicode is refused", BridgeCheck::errors);
    check("an exception thrown by the callback reaches the caller; the model stays usable", BridgeCheck::callbackThrows);
    check("close() twice is safe; use after close is an IllegalStateException", BridgeCheck::closeTwice);
    check("manifest memory estimate equals contract.py memory_bytes", BridgeCheck::memoryEstimate);
    check("no native memory growth over 20 open/close cycles (VmRSS)", BridgeCheck::noGrowth);
    System.out.println(passed + " passed, " + failed + " failed");
    System.exit(failed == 0 ? 0 : 1);
  }

  private static void check(String name, Check c) {
    try {
      c.run();
      passed++;
      System.out.println("ok   " + name);
    } catch (Throwable t) {
      failed++;
      System.out.println("FAIL " + name + ": " + t);
      t.printStackTrace(System.out);
    }
  }

  private static void require(boolean ok, String what) {
    if (!ok) throw new AssertionError(what);
  }

  private static String read(String name) throws IOException {
    return new String(Files.readAllBytes(Paths.get(expected.getPath(), name)), StandardCharsets.UTF_8);
  }

  private static Edgecpm open() {
    return Edgecpm.open(art, new Options().threads(1));
  }

  private static void greedy() throws IOException {
    String want = read("greedy16.txt");
    try (Edgecpm m = open()) {
      Result r = m.generate(read("prompt.txt"), new Params().maxTokens(16).temp(0));
      require(r.text.equals(want), "got [" + r.text + "] want [" + want + "]");
      require(r.generatedTokens == 16 || r.finish == Result.Finish.STOP, "generated " + r.generatedTokens);
    }
  }

  private static void streaming() {
    try (Edgecpm m = open()) {
      List<String> pieces = new ArrayList<>();
      List<Integer> tokens = new ArrayList<>();
      Result r = m.generate("Write a haiku about Tokyo in Japanese: 東京", new Params().maxTokens(40), (p, t) -> {
        pieces.add(p);
        tokens.add(t);
      });
      StringBuilder joined = new StringBuilder();
      for (String p : pieces) {
        // strict decoding in the binding would have thrown; check once more that each piece round-trips
        require(new String(p.getBytes(StandardCharsets.UTF_8), StandardCharsets.UTF_8).equals(p), "piece " + p);
        require(p.indexOf('\uFFFD') < 0, "replacement character in piece " + p);
        joined.append(p);
      }
      require(!r.text.isEmpty(), "empty text");
      require(joined.toString().equals(r.text), "pieces [" + joined + "] != text [" + r.text + "]");
      require(tokens.size() == r.generatedTokens, tokens.size() + " callbacks for " + r.generatedTokens + " tokens");
      int[] ids = tokens.stream().mapToInt(Integer::intValue).toArray();
      require(m.detokenize(ids).equals(r.text), "the callback's token ids, in order, do not decode to the text");
    }
  }

  private static void stopFromCallback() {
    try (Edgecpm m = open()) {
      String prompt = "The capital of France is";
      String full = m.generate(prompt, new Params().maxTokens(20)).text;
      int[] seen = {0};
      Result r = m.generate(prompt, new Params().maxTokens(20), (p, t) -> {
        if (!p.isEmpty() && ++seen[0] == 3) m.stop();
      });
      require(r.finish == Result.Finish.CALLBACK, "finish " + r.finish);
      require(r.generatedTokens < 20 && !r.text.isEmpty() && full.startsWith(r.text), "text [" + r.text + "]");
      Result again = m.generate(prompt, new Params().maxTokens(20));  // the stop does not stick
      require(again.text.equals(full), "after a stop, the next generation differs");
    }
  }

  private static void stopFromThread() throws Exception {
    try (Edgecpm m = open()) {
      CountDownLatch first = new CountDownLatch(1);
      Thread t = new Thread(() -> {
        try {
          if (first.await(60, TimeUnit.SECONDS)) m.stop();
        } catch (InterruptedException ignored) {
          Thread.currentThread().interrupt();
        }
      });
      t.start();
      Result r = m.generate("Once upon a time", new Params().maxTokens(200), (p, tok) -> {
        first.countDown();
        try {
          Thread.sleep(20);  // give the other thread time to call stop()
        } catch (InterruptedException ignored) {
          Thread.currentThread().interrupt();
        }
      });
      t.join();
      require(r.finish == Result.Finish.CALLBACK && r.generatedTokens < 200, r.toString());
    }
  }

  private static void snapshot() {
    try (Edgecpm m = open()) {
      String prefix = "Hello world, how are";
      Params p = new Params().maxTokens(12);
      int[] pre = m.tokenize(prefix, null), a = m.tokenize(" you today?", false), b = m.tokenize(" France is", false);
      m.reset();
      String freshA = m.generateTokens(concat(pre, a), p, null).text;
      m.reset();
      String freshB = m.generateTokens(concat(pre, b), p, null).text;
      m.reset();
      m.generateTokens(pre, new Params().maxTokens(1), null);  // the state holds the prefix
      try (Snapshot s = m.snapshot()) {
        String gotA = m.continueWith(" you today?", p, null).text;
        m.restore(s);
        String gotB = m.continueWith(" France is", p, null).text;
        m.restore(s);
        String againA = m.continueWith(" you today?", p, null).text;
        require(gotA.equals(againA), "restore gave [" + againA + "] after [" + gotA + "]");
        require(gotA.equals(freshA) && gotB.equals(freshB), "restored continuation differs from a fresh one");
      }
    }
  }

  private static void chat() throws IOException {
    try (Edgecpm m = open(); Chat c = m.chat("Be brief.")) {
      Params p = new Params().maxTokens(10);
      String first = c.send("Hello world", p, null).text;
      int total = m.tokenize("x", null).length;  // warm-up use of the model between turns is allowed
      require(total > 0, "tokenize");
      StringBuilder streamed = new StringBuilder();
      Result second = c.send("how are you today?", p, (piece, t) -> streamed.append(piece));
      int prefill2 = c.lastPrefill();
      require(first.equals(read("chat1.txt")), "turn 1 [" + first + "] != Python [" + read("chat1.txt") + "]");
      require(second.text.equals(read("chat2.txt")), "turn 2 [" + second.text + "] != Python");
      require(streamed.toString().equals(second.text), "streamed chat text differs");
      Result whole = m.respond(new String[] {"system", "user"}, new String[] {"Be brief.", "Hello world"}, p, null);
      require(whole.text.equals(first), "respond() over the same messages [" + whole.text + "] != chat turn 1");
      // a turn answered elsewhere (the cloud), then a local one: same text as the whole conversation
      // answered from scratch, with the state reused
      c.add("user", "And of Japan?");
      c.add("assistant", "Tokyo.");
      Result third = c.send("Thanks!", p, null);
      int prefill3 = c.lastPrefill();
      Result scratch = m.respond(
          new String[] {"system", "user", "assistant", "user", "assistant", "user", "assistant", "user"},
          new String[] {"Be brief.", "Hello world", first, "how are you today?", second.text, "And of Japan?",
                        "Tokyo.", "Thanks!"}, p, null);
      require(third.text.equals(scratch.text), "after add(): [" + third.text + "] != [" + scratch.text + "]");
      require(prefill3 < scratch.promptTokens, "after add() the chat prefilled " + prefill3 + " of "
              + scratch.promptTokens + " tokens: no reuse");
      require(prefill2 > 0 && prefill2 < second.position - second.generatedTokens,
              "turn 2 prefilled " + prefill2 + " of " + second.position + ": the state was not reused");
    }
  }

  private static void badPath() {
    try {
      Edgecpm.open(art + "/does-not-exist-ü", null).close();
      throw new AssertionError("no exception");
    } catch (EdgecpmException e) {
      require(e.status() == EdgecpmException.ARTIFACT, "status " + e.statusName());
      require(e.getMessage().contains("does not exist") && e.getMessage().contains("does-not-exist-ü"),
              "message: " + e.getMessage());
    }
    try (Edgecpm m = open()) {  // the JVM and the library are fine
      require(m.generate("Hi", new Params().maxTokens(2)).generatedTokens > 0, "usable");
    }
  }

  private static void errors() {
    try (Edgecpm m = Edgecpm.open(art, new Options().context(16))) {
      try {
        m.generate("Hello world, how are you today? Hello world, how are you today? Hello world.", new Params());
        throw new AssertionError("no exception");
      } catch (EdgecpmException e) {
        require(e.status() == EdgecpmException.CONTEXT_OVERFLOW, e.statusName() + ": " + e.getMessage());
        require(e.getMessage().contains("context"), e.getMessage());
      }
      try {
        m.generate("bad \uD800 surrogate", new Params());
        throw new AssertionError("no exception");
      } catch (EdgecpmException e) {
        require(e.status() == EdgecpmException.INVALID_UTF8, e.statusName());
      }
      try {
        m.generate("nul\0inside", new Params());
        throw new AssertionError("no exception");
      } catch (IllegalArgumentException expectedNul) {
        // refused before reaching C, where it would cut the string
      }
      require(m.generate("Hi", new Params().maxTokens(2)).generatedTokens > 0, "still usable");
    }
  }

  private static void callbackThrows() {
    try (Edgecpm m = open()) {
      try {
        m.generate("Hello", new Params().maxTokens(8), (p, t) -> {
          throw new IllegalStateException("from the callback");
        });
        throw new AssertionError("no exception");
      } catch (IllegalStateException e) {
        require("from the callback".equals(e.getMessage()), e.toString());
      }
      try {
        m.generate("Hello", new Params().maxTokens(8), (p, t) -> m.reset());
        throw new AssertionError("no exception");
      } catch (IllegalStateException e) {
        require(e.getMessage().contains("only stop()"), e.toString());
      }
      require(m.generate("Hello", new Params().maxTokens(3)).generatedTokens > 0, "usable after");
    }
  }

  private static void closeTwice() {
    Edgecpm m = open();
    Chat c = m.chat(null);
    Snapshot s = m.snapshot();
    m.close();
    m.close();
    c.close();  // already closed with the model
    s.close();
    s.close();
    require(m.isClosed(), "closed");
    try {
      m.generate("Hi", new Params());
      throw new AssertionError("no exception");
    } catch (IllegalStateException e) {
      require(e.getMessage().contains("closed"), e.getMessage());
    }
  }

  private static void memoryEstimate() throws IOException {
    ArtifactManifest mf = ArtifactManifest.read(new File(art));
    long want = Long.parseLong(read("memory_bytes.txt").trim());
    long got = mf.memoryBytes(mf.runtimeContext(0));
    require(got == want, "Java " + got + " != Python " + want);
    require(mf.hasChatTemplate, "chat template");
  }

  private static void noGrowth() throws IOException {
    long bound = Long.parseLong(read("rss_bound_mb.txt").trim());
    for (int i = 0; i < 3; i++) cycle();  // onnxruntime's env, thread pools and allocator arenas settle
    long before = rssKb();
    for (int i = 0; i < 20; i++) cycle();
    long after = rssKb();
    long growthMb = (after - before) / 1024;
    System.out.println("     VmRSS " + before / 1024 + " MB -> " + after / 1024 + " MB over 20 cycles (bound "
                       + bound + " MB)");
    require(growthMb < bound, "RSS grew by " + growthMb + " MB");
  }

  private static void cycle() {
    try (Edgecpm m = open(); Chat c = m.chat(null); Snapshot s = m.snapshot()) {
      m.generate("Hello", new Params().maxTokens(4), (p, t) -> { });
      c.send("Hi", new Params().maxTokens(2), null);
      m.restore(s);
    }
    System.gc();
  }

  private static long rssKb() throws IOException {
    for (String line : Files.readAllLines(Paths.get("/proc/self/status"))) {
      if (line.startsWith("VmRSS:")) return Long.parseLong(line.replaceAll("[^0-9]", ""));
    }
    throw new IOException("no VmRSS in /proc/self/status");
  }

  private static int[] concat(int[] a, int[] b) {
    int[] out = new int[a.length + b.length];
    System.arraycopy(a, 0, out, 0, a.length);
    System.arraycopy(b, 0, out, a.length, b.length);
    return out;
  }
}
