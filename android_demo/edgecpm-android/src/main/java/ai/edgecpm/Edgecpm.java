package ai.edgecpm;

import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * One opened artifact (edgecpm_model): engine, state and tokenizer. Free of android.*: the same class runs on
 * a desktop JVM (make android-check) and in the app.
 *
 * <p>A model is used by one thread at a time: its methods are synchronized, except {@link #stop()}, which
 * any thread may call while a generation runs. The token callback runs on the generating thread.
 */
public final class Edgecpm implements AutoCloseable {
  /** The C header version this binding was written against (EDGECPM_API_VERSION). */
  public static final int API_VERSION = 1;

  static {
    // Desktop: -Dedgecpm.jni.library=/path/libedgecpm_jni.so; Android: from the APK's lib/ABI folder.
    String path = System.getProperty("edgecpm.jni.library");
    if (path != null && !path.isEmpty()) {
      System.load(path);
    } else {
      System.loadLibrary("edgecpm_jni");
    }
    if (nApiVersion() != API_VERSION) {
      throw new UnsatisfiedLinkError("libedgecpm has API version " + nApiVersion() + ", this binding needs "
                                     + API_VERSION);
    }
  }

  private long handle;
  private final List<Chat> chats = new ArrayList<>();
  private volatile boolean stopRequested;
  private boolean inCallback;

  private Edgecpm(long handle) {
    this.handle = handle;
  }

  /** Opens an artifact folder (docs/artifact.md); throws EdgecpmException with the runtime's message. */
  public static Edgecpm open(String path, Options options) {
    Options o = options != null ? options : new Options();
    long[] out = new long[1];
    int st = nOpen(utf8(path, "path"), o.threads, o.context, utf8OrNull(o.providers, "providers"),
                   utf8OrNull(o.recurrentKernel, "recurrentKernel"), utf8OrNull(o.opsLibrary, "opsLibrary"),
                   o.verifyHashes, o.reportPlacement, out);
    if (st != 0) throw error(st);
    return new Edgecpm(out[0]);
  }

  public static Edgecpm open(String path) {
    return open(path, null);
  }

  /** The native library's version, e.g. "0.1.0". */
  public static String version() {
    return text(nVersion());
  }

  /** Continues `prompt` (raw text) from an empty state. */
  public synchronized Result generate(String prompt, Params params, TokenCallback callback) {
    return run(utf8(prompt, "prompt"), null, params, callback);
  }

  public Result generate(String prompt, Params params) {
    return generate(prompt, params, null);
  }

  /** Feeds `text` (no BOS) after the current state, then generates: the continuation after {@link #restore}. */
  public synchronized Result continueWith(String text, Params params, TokenCallback callback) {
    return run(null, tokenize(text, false), params, callback);
  }

  /** Feeds token ids after the current state, then generates. */
  public synchronized Result generateTokens(int[] ids, Params params, TokenCallback callback) {
    if (ids == null || ids.length == 0) throw new IllegalArgumentException("at least one token id is needed");
    return run(null, ids.clone(), params, callback);
  }

  /** The artifact's chat template over the messages (roles[i], contents[i]). */
  public synchronized String applyChatTemplate(String[] roles, String[] contents, boolean addGenerationPrompt) {
    checkUsable();
    if (roles.length != contents.length) throw new IllegalArgumentException("roles and contents differ in length");
    byte[][] r = new byte[roles.length][], c = new byte[contents.length][];
    for (int i = 0; i < roles.length; i++) {
      r[i] = utf8(roles[i], "role");
      c[i] = utf8(contents[i], "content");
    }
    byte[][] out = new byte[1][];
    check(nApplyChatTemplate(handle, r, c, addGenerationPrompt, out));
    return text(out[0]);
  }

  /**
   * Answers a whole conversation from an empty state, with the same tokens a {@link Chat} would feed
   * (template with the generation prompt, no extra BOS), re-prefilling everything (no state reuse). A Chat
   * with {@link Chat#add} is the cheaper way to carry turns answered elsewhere.
   */
  public synchronized Result respond(String[] roles, String[] contents, Params params, TokenCallback callback) {
    int[] ids = tokenize(applyChatTemplate(roles, contents, true), false);
    reset();
    return run(null, ids, params, callback);
  }

  /** A new multi-turn chat over this model's state; system may be null. */
  public synchronized Chat chat(String system) {
    checkUsable();
    long[] out = new long[1];
    check(nChatCreate(handle, utf8OrNull(system, "system"), out));
    Chat c = new Chat(this, out[0]);
    chats.add(c);
    return c;
  }

  /**
   * Ends the generation in progress after the current token (the callback then returns nonzero to the C
   * library). Safe from any thread, and from the callback itself; a no-op when nothing runs.
   */
  public void stop() {
    stopRequested = true;
  }

  public synchronized Snapshot snapshot() {
    checkUsable();
    long[] out = new long[1];
    check(nSnapshotTake(handle, out));
    return new Snapshot(this, out[0]);
  }

  public synchronized void restore(Snapshot snapshot) {
    checkUsable();
    if (snapshot.owner != this) throw new IllegalArgumentException("the snapshot was taken from another model");
    check(nSnapshotRestore(handle, snapshot.handle()));
  }

  /** Empties the state. */
  public synchronized void reset() {
    checkUsable();
    check(nReset(handle));
  }

  /** Token ids of text; addBos: the artifact's rule is used when null. */
  public synchronized int[] tokenize(String text, Boolean addBos) {
    checkUsable();
    int[][] out = new int[1][];
    check(nTokenize(handle, utf8(text, "text"), addBos == null ? -1 : addBos ? 1 : 0, out));
    return out[0];
  }

  public synchronized String detokenize(int[] ids) {
    checkUsable();
    byte[][] out = new byte[1][];
    check(nDetokenize(handle, ids, out));
    return text(out[0]);
  }

  /** Where onnxruntime placed the nodes ("CPUExecutionProvider 612" lines, fallback notes); needs reportPlacement. */
  public synchronized String placement() {
    return info(null);
  }

  /** Tokens of context allocated. */
  public synchronized int context() {
    int[] v = new int[2];
    info(v);
    return v[0];
  }

  public synchronized int vocabSize() {
    int[] v = new int[2];
    info(v);
    return v[1];
  }

  /** Frees the model (and its open chats). Safe to call twice; a running generation is stopped first. */
  @Override
  public void close() {
    stopRequested = true;
    synchronized (this) {
      if (inCallback) throw new IllegalStateException("close() from inside the token callback; call stop() there");
      if (handle == 0) return;
      for (Chat c : new ArrayList<>(chats)) c.close();
      nClose(handle);
      handle = 0;
    }
  }

  public synchronized boolean isClosed() {
    return handle == 0;
  }

  // --- internals --------------------------------------------------------------------------------------

  /** Calls back into Java from the native stream callback (same thread). Returns nonzero to stop. */
  static final class Sink {
    private final Edgecpm model;
    private final TokenCallback callback;
    private final CharsetDecoder decoder = StandardCharsets.UTF_8.newDecoder()
        .onMalformedInput(CodingErrorAction.REPORT).onUnmappableCharacter(CodingErrorAction.REPORT);
    Throwable failure;

    Sink(Edgecpm model, TokenCallback callback) {
      this.model = model;
      this.callback = callback;
    }

    int onPiece(byte[] piece, int token) {
      try {
        CharBuffer chars = decoder.reset().decode(ByteBuffer.wrap(piece));
        if (callback != null) {
          model.inCallback = true;
          try {
            callback.onToken(chars.toString(), token);
          } finally {
            model.inCallback = false;
          }
        }
      } catch (CharacterCodingException e) {
        failure = new EdgecpmException(EdgecpmException.INTERNAL, "the runtime streamed a piece that is not whole UTF-8");
        return 1;
      } catch (Throwable t) {  // nothing may propagate into native code: keep it, stop, rethrow after
        failure = t;
        return 1;
      }
      return model.stopRequested ? 1 : 0;
    }
  }

  private Result run(byte[] prompt, int[] ids, Params params, TokenCallback callback) {
    checkUsable();
    Params p = params != null ? params : new Params();
    Sink sink = new Sink(this, callback);
    byte[][] out = new byte[1][];
    stopRequested = false;
    int st = nGenerate(handle, prompt, ids, p.ints(), p.reals(), stops(p), sink, out);
    return finish(st, sink, out);
  }

  Result runChat(long chat, String content, Params params, TokenCallback callback) {
    checkUsable();
    Params p = params != null ? params : new Params();
    Sink sink = new Sink(this, callback);
    byte[][] out = new byte[1][];
    stopRequested = false;
    int st = nChatSend(chat, utf8(content, "content"), p.ints(), p.reals(), stops(p), sink, out);
    return finish(st, sink, out);
  }

  private Result finish(int st, Sink sink, byte[][] out) {
    if (sink.failure != null) {
      if (sink.failure instanceof RuntimeException) throw (RuntimeException) sink.failure;
      if (sink.failure instanceof Error) throw (Error) sink.failure;
      throw new RuntimeException(sink.failure);
    }
    check(st);
    double[] s = new double[6];
    check(nStats(handle, s));
    return new Result(text(out[0]), s);
  }

  private String info(int[] ints) {
    checkUsable();
    byte[][] placement = new byte[1][];
    check(nInfo(handle, placement, ints != null ? ints : new int[2]));
    return text(placement[0]);
  }

  void checkUsable() {
    if (handle == 0) throw new IllegalStateException("the model is closed");
    if (inCallback) throw new IllegalStateException("the model is generating: only stop() may be called from the callback");
  }

  void check(int status) {
    if (status != 0) throw error(status);
  }

  void forget(Chat c) {
    chats.remove(c);
  }

  private static EdgecpmException error(int status) {
    return new EdgecpmException(status, text(nLastError()));
  }

  private static byte[][] stops(Params p) {
    byte[][] s = new byte[p.stop.size()][];
    for (int i = 0; i < s.length; i++) s[i] = utf8(p.stop.get(i), "stop");
    return s;
  }

  private static String text(byte[] b) {
    return b == null ? "" : new String(b, StandardCharsets.UTF_8);
  }

  private static byte[] utf8OrNull(String s, String what) {
    return s == null ? null : utf8(s, what);
  }

  /** Strict UTF-8 (a lone surrogate is an error, not '?'); NUL is refused since the C API takes C strings. */
  static byte[] utf8(String s, String what) {
    if (s == null) throw new IllegalArgumentException(what + " must not be null");
    if (s.indexOf('\0') >= 0) throw new IllegalArgumentException(what + " contains a NUL character");
    try {
      ByteBuffer b = StandardCharsets.UTF_8.newEncoder().onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT).encode(CharBuffer.wrap(s));
      byte[] out = new byte[b.remaining()];
      b.get(out);
      return out;
    } catch (CharacterCodingException e) {
      throw new EdgecpmException(EdgecpmException.INVALID_UTF8, what + " is not valid Unicode (a lone surrogate)");
    }
  }

  // --- native (edgecpm_jni.cpp); every int is an edgecpm_status --------------------------------------
  static native int nApiVersion();
  static native byte[] nVersion();
  static native byte[] nLastError();
  static native int nOpen(byte[] path, int threads, int context, byte[] providers, byte[] kernel, byte[] opsLibrary,
                          boolean verifyHashes, boolean reportPlacement, long[] out);
  static native void nClose(long model);
  static native int nInfo(long model, byte[][] placement, int[] contextAndVocab);
  static native int nGenerate(long model, byte[] prompt, int[] ids, long[] ints, double[] reals, byte[][] stop,
                              Sink sink, byte[][] text);
  static native int nStats(long model, double[] out);
  static native int nReset(long model);
  static native int nTokenize(long model, byte[] text, int addBos, int[][] out);
  static native int nDetokenize(long model, int[] ids, byte[][] out);
  static native int nApplyChatTemplate(long model, byte[][] roles, byte[][] contents, boolean addGenerationPrompt,
                                       byte[][] out);
  static native int nSnapshotTake(long model, long[] out);
  static native int nSnapshotRestore(long model, long snapshot);
  static native void nSnapshotFree(long snapshot);
  static native int nChatCreate(long model, byte[] system, long[] out);
  static native int nChatSend(long chat, byte[] content, long[] ints, double[] reals, byte[][] stop, Sink sink,
                              byte[][] text);
  static native int nChatAdd(long chat, byte[] role, byte[] content);
  static native int nChatLastPrefill(long chat);
  static native int nChatReset(long chat);
  static native void nChatDestroy(long chat);
}
