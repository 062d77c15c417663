package ai.edgecpm;

/**
 * A multi-turn conversation over the model's state (edgecpm_chat): each turn prefills only what the state
 * does not hold yet. Made by {@link Edgecpm#chat(String)}; closed with the model if not before.
 */
public final class Chat implements AutoCloseable {
  private final Edgecpm model;
  private long handle;

  Chat(Edgecpm model, long handle) {
    this.model = model;
    this.handle = handle;
  }

  /** Adds a user message and streams the assistant's reply. */
  public Result send(String content, Params params, TokenCallback callback) {
    synchronized (model) {
      return model.runChat(live(), content, params, callback);
    }
  }

  public Result send(String content) {
    return send(content, new Params(), null);
  }

  /**
   * Appends a message without generating, e.g. a turn the cloud answered ("user" then "assistant"): the next
   * send renders the whole conversation and still prefills only what the state does not hold.
   */
  public void add(String role, String content) {
    synchronized (model) {
      model.checkUsable();
      model.check(Edgecpm.nChatAdd(live(), Edgecpm.utf8(role, "role"), Edgecpm.utf8(content, "content")));
    }
  }

  /** Tokens prefilled for the last turn (the rest came from the state). */
  public int lastPrefill() {
    synchronized (model) {
      model.checkUsable();
      return Edgecpm.nChatLastPrefill(live());
    }
  }

  /** Forget the conversation (keeps the system message). */
  public void reset() {
    synchronized (model) {
      model.checkUsable();
      model.check(Edgecpm.nChatReset(live()));
    }
  }

  private long live() {
    if (handle == 0) throw new IllegalStateException("the chat is closed");
    return handle;
  }

  @Override
  public void close() {
    synchronized (model) {
      if (handle != 0) {
        Edgecpm.nChatDestroy(handle);
        handle = 0;
        model.forget(this);
      }
    }
  }
}
