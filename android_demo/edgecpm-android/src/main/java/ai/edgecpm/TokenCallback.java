package ai.edgecpm;

/**
 * Receives each new piece of text as it is generated, on the thread that called generate or send.
 * Pieces are whole characters (the runtime never splits a UTF-8 sequence); a piece may be empty when a token
 * completes no character yet. To end the generation early, call {@link Edgecpm#stop()} (from here or from
 * any other thread). Calling other methods of the model from inside the callback is refused.
 */
@FunctionalInterface
public interface TokenCallback {
  void onToken(String piece, int token);
}
