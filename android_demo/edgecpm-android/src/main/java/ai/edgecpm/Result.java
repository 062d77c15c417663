package ai.edgecpm;

/** One generation: the text and edgecpm_stats. */
public final class Result {
  /** Why the generation ended (edgecpm_finish). */
  public enum Finish { NONE, STOP, LENGTH, CALLBACK }

  public final String text;
  /** Tokens prefilled for this generation (for a chat turn: only those the state did not hold). */
  public final int promptTokens;
  public final int generatedTokens;
  public final double prefillTokensPerSecond;
  public final double decodeTokensPerSecond;
  /** Tokens the state holds now. */
  public final int position;
  public final Finish finish;

  Result(String text, double[] s) {
    this.text = text;
    this.promptTokens = (int) s[0];
    this.generatedTokens = (int) s[1];
    this.prefillTokensPerSecond = s[2];
    this.decodeTokensPerSecond = s[3];
    this.position = (int) s[4];
    int f = (int) s[5];
    this.finish = f >= 0 && f < Finish.values().length ? Finish.values()[f] : Finish.NONE;
  }

  @Override
  public String toString() {
    return String.format(java.util.Locale.ROOT, "%d tokens, %.1f tok/s (%s)", generatedTokens, decodeTokensPerSecond,
                         finish);
  }
}
