package ai.edgecpm;

/** A failure reported by the native runtime: its edgecpm_status code and edgecpm_last_error() message. */
public class EdgecpmException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  public static final int INVALID_ARGUMENT = 1;
  public static final int ARTIFACT = 2;
  public static final int RUNTIME = 3;
  public static final int TOKENIZER = 4;
  public static final int INVALID_UTF8 = 5;
  public static final int CONTEXT_OVERFLOW = 6;
  public static final int NO_CHAT_TEMPLATE = 7;
  public static final int INTERNAL = 8;

  private final int status;

  public EdgecpmException(int status, String message) {
    super(message);
    this.status = status;
  }

  /** The edgecpm_status code (one of the constants above). */
  public int status() {
    return status;
  }

  /** The status's name in the C header, e.g. "EDGECPM_ERR_CONTEXT_OVERFLOW". */
  public String statusName() {
    switch (status) {
      case INVALID_ARGUMENT: return "EDGECPM_ERR_INVALID_ARGUMENT";
      case ARTIFACT: return "EDGECPM_ERR_ARTIFACT";
      case RUNTIME: return "EDGECPM_ERR_RUNTIME";
      case TOKENIZER: return "EDGECPM_ERR_TOKENIZER";
      case INVALID_UTF8: return "EDGECPM_ERR_INVALID_UTF8";
      case CONTEXT_OVERFLOW: return "EDGECPM_ERR_CONTEXT_OVERFLOW";
      case NO_CHAT_TEMPLATE: return "EDGECPM_ERR_NO_CHAT_TEMPLATE";
      case INTERNAL: return "EDGECPM_ERR_INTERNAL";
      default: return "EDGECPM_STATUS_" + status;
    }
  }
}
