package ai.edgecpm;

import java.io.File;
import java.io.IOException;
import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The few manifest fields (edgecpm.json, docs/artifact.md) an app needs before loading: whether the model
 * fits in memory. {@link #memoryBytes(int)} is edgecpm/contract.py Manifest.memory_bytes: weights plus all
 * state at a context. Read with a small JSON reader, so this class has no dependency (org.json is Android-only).
 */
public final class ArtifactManifest {
  public static final String FILE = "edgecpm.json";
  public static final int DEFAULT_CONTEXT = 4096;

  public final String architecture;
  public final int contextLength;
  public final long weightsBytes;
  public final boolean hasChatTemplate;
  private final long fixedStateBytes;
  private final long perTokenStateBytes;

  private ArtifactManifest(Map<String, Object> m) {
    architecture = String.valueOf(m.get("architecture"));
    contextLength = (int) num(m, "context_length");
    weightsBytes = (long) num(m, "weights_bytes");
    hasChatTemplate = m.get("chat_template") instanceof String;
    long fixed = 0, perTok = 0;
    Object state = m.get("state");
    if (!(state instanceof List)) throw new IllegalArgumentException("edgecpm.json has no state list");
    for (Object o : (List<?>) state) {
      @SuppressWarnings("unchecked")
      Map<String, Object> s = (Map<String, Object>) o;
      Object dt = s.get("dtype");
      String dtype = dt == null ? "float32" : String.valueOf(dt);
      long n = "float16".equals(dtype) ? 2 : 4;
      boolean perToken = false;
      for (Object d : (List<?>) s.get("shape")) {
        if ("ctx".equals(d)) perToken = true;
        else n *= ((Number) d).longValue();
      }
      if (perToken) perTok += n;
      else fixed += n;
    }
    fixedStateBytes = fixed;
    perTokenStateBytes = perTok;
  }

  /** Reads FOLDER/edgecpm.json; throws EdgecpmException(ARTIFACT) with the reason. */
  public static ArtifactManifest read(File folder) {
    File f = new File(folder, FILE);
    try {
      String text = new String(readAll(f), StandardCharsets.UTF_8);
      Object v = new Reader(text).value();
      if (!(v instanceof Map)) throw new IllegalArgumentException("not a JSON object");
      @SuppressWarnings("unchecked")
      Map<String, Object> m = (Map<String, Object>) v;
      if (!"edgecpm".equals(m.get("format"))) throw new IllegalArgumentException("not an edgecpm manifest");
      return new ArtifactManifest(m);
    } catch (IOException e) {
      throw new EdgecpmException(EdgecpmException.ARTIFACT, f + " cannot be read (" + e.getMessage() + ")");
    } catch (RuntimeException e) {
      throw new EdgecpmException(EdgecpmException.ARTIFACT, f + " is not a valid manifest (" + e.getMessage() + ")");
    }
  }

  // Plain streams: the NIO file API arrived in Android 8 (API 26), above minSdk 24.
  private static byte[] readAll(File f) throws IOException {
    try (InputStream in = new FileInputStream(f)) {
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      byte[] buf = new byte[1 << 16];
      for (int n; (n = in.read(buf)) > 0; ) out.write(buf, 0, n);
      return out.toByteArray();
    }
  }

  /** The context a runtime allocates: the one requested (0 = DEFAULT_CONTEXT), capped by the model's. */
  public int runtimeContext(int requested) {
    return Math.min(requested > 0 ? requested : DEFAULT_CONTEXT, contextLength);
  }

  /** Weights plus all state at context ctx: what loading the artifact needs at least. */
  public long memoryBytes(int ctx) {
    return weightsBytes + fixedStateBytes + perTokenStateBytes * ctx;
  }

  private static double num(Map<String, Object> m, String key) {
    Object v = m.get(key);
    if (!(v instanceof Number)) throw new IllegalArgumentException(key + " is missing or not a number");
    return ((Number) v).doubleValue();
  }

  /** JSON (RFC 8259) to Map / List / String / Double / Boolean / null. */
  private static final class Reader {
    private final String s;
    private int i;

    Reader(String s) {
      this.s = s;
    }

    Object value() {
      Object v = any();
      skip();
      if (i != s.length()) throw fail("trailing characters");
      return v;
    }

    private Object any() {
      skip();
      if (i >= s.length()) throw fail("unexpected end");
      char c = s.charAt(i);
      if (c == '{') {
        Map<String, Object> m = new LinkedHashMap<>();
        i++;
        skip();
        if (peek('}')) return m;
        do {
          skip();
          String k = string();
          skip();
          expect(':');
          m.put(k, any());
          skip();
        } while (eat(','));
        expect('}');
        return m;
      }
      if (c == '[') {
        List<Object> l = new ArrayList<>();
        i++;
        skip();
        if (peek(']')) return l;
        do {
          l.add(any());
          skip();
        } while (eat(','));
        expect(']');
        return l;
      }
      if (c == '"') return string();
      if (s.startsWith("true", i)) { i += 4; return Boolean.TRUE; }
      if (s.startsWith("false", i)) { i += 5; return Boolean.FALSE; }
      if (s.startsWith("null", i)) { i += 4; return null; }
      int start = i;
      while (i < s.length() && "+-0123456789.eE".indexOf(s.charAt(i)) >= 0) i++;
      if (start == i) throw fail("unexpected '" + c + "'");
      return Double.parseDouble(s.substring(start, i));
    }

    private String string() {
      expect('"');
      StringBuilder b = new StringBuilder();
      while (true) {
        if (i >= s.length()) throw fail("unterminated string");
        char c = s.charAt(i++);
        if (c == '"') return b.toString();
        if (c != '\\') { b.append(c); continue; }
        char e = s.charAt(i++);
        switch (e) {
          case 'n': b.append('\n'); break;
          case 't': b.append('\t'); break;
          case 'r': b.append('\r'); break;
          case 'b': b.append('\b'); break;
          case 'f': b.append('\f'); break;
          case 'u': b.append((char) Integer.parseInt(s.substring(i, i + 4), 16)); i += 4; break;
          default: b.append(e);
        }
      }
    }

    private void skip() {
      while (i < s.length() && Character.isWhitespace(s.charAt(i))) i++;
    }

    private boolean peek(char c) {
      if (i < s.length() && s.charAt(i) == c) { i++; return true; }
      return false;
    }

    private boolean eat(char c) {
      skip();
      return peek(c);
    }

    private void expect(char c) {
      if (!peek(c)) throw fail("expected '" + c + "'");
    }

    private IllegalArgumentException fail(String why) {
      return new IllegalArgumentException("JSON " + why + " at offset " + i);
    }
  }
}
