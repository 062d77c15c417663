package ai.edgecpm;

/** How to open an artifact (edgecpm_open_options). Fluent setters; null strings mean the runtime's default. */
public final class Options {
  int threads;
  int context;
  String providers;
  String recurrentKernel;
  String opsLibrary;
  boolean verifyHashes;
  boolean reportPlacement;

  /** Intra-op threads; 0 = onnxruntime's default. */
  public Options threads(int n) {
    if (n < 0) throw new IllegalArgumentException("threads must be >= 0");
    threads = n;
    return this;
  }

  /** Tokens of context to allocate; 0 = min(4096, the artifact's context). */
  public Options context(int tokens) {
    if (tokens < 0) throw new IllegalArgumentException("context must be >= 0");
    context = tokens;
    return this;
  }

  /** Execution providers in order, e.g. "xnnpack,cpu" or "nnapi"; CPU is always the fallback. */
  public Options providers(String list) {
    providers = list;
    return this;
  }

  /** "auto" | "function" | "ort" | "native". */
  public Options recurrentKernel(String kernel) {
    recurrentKernel = kernel;
    return this;
  }

  /** Path of libedgecpm_ops.so (on Android: the app's nativeLibraryDir + "/libedgecpm_ops.so"). */
  public Options opsLibrary(String path) {
    opsLibrary = path;
    return this;
  }

  /** Check every file's sha256 on open (sizes are always checked). */
  public Options verifyHashes(boolean on) {
    verifyHashes = on;
    return this;
  }

  /** Record where onnxruntime placed the graph's nodes ({@link Edgecpm#placement()}). */
  public Options reportPlacement(boolean on) {
    reportPlacement = on;
    return this;
  }
}
