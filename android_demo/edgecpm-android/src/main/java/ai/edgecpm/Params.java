package ai.edgecpm;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/** Generation parameters (edgecpm_gen_params); the defaults are the C defaults: greedy, 256 tokens. */
public final class Params {
  int maxTokens = 256;
  double temp = 0.0;
  double topP = 1.0;
  int topK = 0;
  double minP = 0.0;
  double repetitionPenalty = 1.0;
  long seed = -1;
  int prefillChunk = 512;
  final List<String> stop = new ArrayList<>();

  public Params maxTokens(int n) {
    maxTokens = n;
    return this;
  }

  /** 0 = greedy. */
  public Params temp(double t) {
    temp = t;
    return this;
  }

  public Params topP(double p) {
    topP = p;
    return this;
  }

  public Params topK(int k) {
    topK = k;
    return this;
  }

  public Params minP(double p) {
    minP = p;
    return this;
  }

  public Params repetitionPenalty(double p) {
    repetitionPenalty = p;
    return this;
  }

  /** &lt; 0 = from the OS; the same seed gives the same draws as the Python runtime. */
  public Params seed(long s) {
    seed = s;
    return this;
  }

  public Params prefillChunk(int n) {
    prefillChunk = n;
    return this;
  }

  /** Stop strings (not included in the output). */
  public Params stop(String... strings) {
    stop.addAll(Arrays.asList(strings));
    return this;
  }

  long[] ints() {
    return new long[] {maxTokens, topK, seed, prefillChunk};
  }

  double[] reals() {
    return new double[] {temp, topP, minP, repetitionPenalty};
  }
}
