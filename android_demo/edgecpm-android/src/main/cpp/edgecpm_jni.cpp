// JNI glue between ai.edgecpm.Edgecpm (Java) and the edgecpm C API (runtime/include/edgecpm.h).
//
// Rules kept here:
// - Text crosses as UTF-8 byte[] both ways, never as modified UTF-8 (NewStringUTF / GetStringUTFChars mangle
//   characters outside the BMP, e.g. emoji); Java encodes and decodes strictly.
// - Every entry point returns an edgecpm_status; Java turns a failure into an EdgecpmException with
//   edgecpm_last_error() (read on the same thread, right after). Native code throws no Java exception
//   except OutOfMemoryError when the JVM cannot allocate an array.
// - No C++ exception leaves a JNI function (each body is wrapped); no JNI call is made while a Java
//   exception is pending, except the release/delete calls that JNI allows then.
// - The stream callback runs on the calling thread (the C API calls it synchronously), calls back into
//   Java through the JNIEnv of that same call, and deletes each piece's local reference.
#include <jni.h>

#include <cstdint>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "edgecpm.h"

namespace {

jclass g_sink_class = nullptr;      // ai.edgecpm.Edgecpm$Sink (global ref)
jmethodID g_sink_on_piece = nullptr;  // int onPiece(byte[] piece, int token)

constexpr jint kFailed = -1;  // returned when a Java exception is pending (Java sees the exception, not this)

// byte[] -> NUL-terminated std::string; null -> *present = false.
bool bytes(JNIEnv* env, jbyteArray a, std::string* out, bool* present = nullptr) {
  if (present) *present = a != nullptr;
  out->clear();
  if (!a) return true;
  jsize n = env->GetArrayLength(a);
  out->resize(static_cast<size_t>(n));
  if (n) env->GetByteArrayRegion(a, 0, n, reinterpret_cast<jbyte*>(&(*out)[0]));
  return !env->ExceptionCheck();
}

jbyteArray to_bytes(JNIEnv* env, const char* p, size_t n) {
  jbyteArray a = env->NewByteArray(static_cast<jsize>(n));
  if (a && n) env->SetByteArrayRegion(a, 0, static_cast<jsize>(n), reinterpret_cast<const jbyte*>(p));
  return a;  // nullptr with OutOfMemoryError pending
}

// Store a C string (owned by the library, freed here) into out[0] as byte[]. False if an exception is pending.
bool put_string(JNIEnv* env, jobjectArray out, char* s) {
  bool ok = true;
  if (out && env->GetArrayLength(out) > 0) {
    jbyteArray a = to_bytes(env, s ? s : "", s ? std::strlen(s) : 0);
    if (a) {
      env->SetObjectArrayElement(out, 0, a);
      env->DeleteLocalRef(a);
    }
    ok = !env->ExceptionCheck();
  }
  edgecpm_free(s);
  return ok;
}

void put_long(JNIEnv* env, jlongArray out, const void* p) {
  jlong v = static_cast<jlong>(reinterpret_cast<intptr_t>(p));
  env->SetLongArrayRegion(out, 0, 1, &v);
}

template <typename T>
T* handle(jlong h) { return reinterpret_cast<T*>(static_cast<intptr_t>(h)); }

// A C++ exception (std::bad_alloc from a std::string) must not unwind into the JVM.
template <typename F>
jint guarded(JNIEnv* env, F&& f) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    if (!env->ExceptionCheck()) {
      jclass c = env->FindClass("java/lang/OutOfMemoryError");
      if (c) env->ThrowNew(c, "edgecpm JNI: out of native memory");
    }
  } catch (...) {
    if (!env->ExceptionCheck()) {
      jclass c = env->FindClass("java/lang/IllegalStateException");
      if (c) env->ThrowNew(c, "edgecpm JNI: unexpected native error");
    }
  }
  return kFailed;
}

// Generation parameters from Java: ints = {max_tokens, top_k, seed, prefill_chunk},
// reals = {temp, top_p, min_p, repetition_penalty}, stop = byte[][] (may be null).
struct Params {
  edgecpm_gen_params p;
  std::vector<std::string> stop_text;
  std::vector<const char*> stop_ptr;

  bool read(JNIEnv* env, jlongArray ints, jdoubleArray reals, jobjectArray stop) {
    edgecpm_gen_params_default(&p);
    jlong i[4];
    jdouble d[4];
    env->GetLongArrayRegion(ints, 0, 4, i);
    env->GetDoubleArrayRegion(reals, 0, 4, d);
    if (env->ExceptionCheck()) return false;
    p.max_tokens = static_cast<int32_t>(i[0]);
    p.top_k = static_cast<int32_t>(i[1]);
    p.seed = static_cast<int64_t>(i[2]);
    p.prefill_chunk = static_cast<int32_t>(i[3]);
    p.temp = d[0];
    p.top_p = d[1];
    p.min_p = d[2];
    p.repetition_penalty = d[3];
    if (stop) {
      jsize n = env->GetArrayLength(stop);
      stop_text.resize(static_cast<size_t>(n));
      for (jsize k = 0; k < n; ++k) {
        auto s = static_cast<jbyteArray>(env->GetObjectArrayElement(stop, k));
        bool ok = bytes(env, s, &stop_text[static_cast<size_t>(k)]);
        if (s) env->DeleteLocalRef(s);
        if (!ok) return false;
      }
      for (auto& s : stop_text) stop_ptr.push_back(s.c_str());
      p.stop = stop_ptr.data();
      p.n_stop = stop_ptr.size();
    }
    return true;
  }
};

// The C callback: forwards each piece to sink.onPiece on this same thread. Nonzero = stop.
struct Stream {
  JNIEnv* env;
  jobject sink;
  bool java_exception = false;
};

int on_piece(const char* piece, size_t len, int32_t token, void* user) {
  auto* s = static_cast<Stream*>(user);
  JNIEnv* env = s->env;
  if (s->java_exception) return 1;
  jbyteArray a = to_bytes(env, piece, len);
  if (!a) {
    s->java_exception = true;  // OutOfMemoryError pending
    return 1;
  }
  jint stop = env->CallIntMethod(s->sink, g_sink_on_piece, a, static_cast<jint>(token));
  env->DeleteLocalRef(a);  // one local ref per piece would otherwise pile up until the native call returns
  if (env->ExceptionCheck()) {  // the sink catches everything it can; this is an Error thrown past it
    s->java_exception = true;
    return 1;
  }
  return stop != 0;
}

}  // namespace

extern "C" {

JNIEXPORT jint JNICALL JNI_OnLoad(JavaVM* vm, void*) {
  JNIEnv* env = nullptr;
  if (vm->GetEnv(reinterpret_cast<void**>(&env), JNI_VERSION_1_6) != JNI_OK) return JNI_ERR;
  jclass c = env->FindClass("ai/edgecpm/Edgecpm$Sink");
  if (!c) return JNI_ERR;
  g_sink_class = static_cast<jclass>(env->NewGlobalRef(c));
  env->DeleteLocalRef(c);
  g_sink_on_piece = env->GetMethodID(g_sink_class, "onPiece", "([BI)I");
  if (!g_sink_class || !g_sink_on_piece) return JNI_ERR;
  return JNI_VERSION_1_6;
}

JNIEXPORT jint JNICALL Java_ai_edgecpm_Edgecpm_nApiVersion(JNIEnv*, jclass) { return edgecpm_api_version(); }

JNIEXPORT jbyteArray JNICALL Java_ai_edgecpm_Edgecpm_nVersion(JNIEnv* env, jclass) {
  const char* v = edgecpm_version();
  return to_bytes(env, v, std::strlen(v));
}

JNIEXPORT jbyteArray JNICALL Java_ai_edgecpm_Edgecpm_nLastError(JNIEnv* env, jclass) {
  const char* e = edgecpm_last_error();
  return to_bytes(env, e, std::strlen(e));
}

JNIEXPORT jint JNICALL Java_ai_edgecpm_Edgecpm_nOpen(JNIEnv* env, jclass, jbyteArray path, jint threads, jint context,
                                                    jbyteArray providers, jbyteArray kernel, jbyteArray ops,
                                                    jboolean verify, jboolean placement, jlongArray out) {
  return guarded(env, [&]() -> jint {
    std::string p, prov, kern, opsl;
    bool has_prov, has_kern, has_ops;
    if (!bytes(env, path, &p) || !bytes(env, providers, &prov, &has_prov) || !bytes(env, kernel, &kern, &has_kern) ||
        !bytes(env, ops, &opsl, &has_ops))
      return kFailed;
    edgecpm_open_options o;
    edgecpm_open_options_default(&o);
    o.threads = threads;
    o.context = context;
    o.providers = has_prov ? prov.c_str() : nullptr;
    o.recurrent_kernel = has_kern ? kern.c_str() : nullptr;
    o.ops_library = has_ops ? opsl.c_str() : nullptr;
    o.verify_hashes = verify ? 1 : 0;
    o.report_placement = placement ? 1 : 0;
    edgecpm_model* m = nullptr;
    edgecpm_status st = edgecpm_open(p.c_str(), &o, &m);
    if (st == EDGECPM_OK) put_long(env, out, m);
    return st;
  });
}

JNIEXPORT void JNICALL Java_ai_edgecpm_Edgecpm_nClose(JNIEnv*, jclass, jlong h) { edgecpm_close(handle<edgecpm_model>(h)); }

JNIEXPORT jint JNICALL Java_ai_edgecpm_Edgecpm_nInfo(JNIEnv* env, jclass, jlong h, jobjectArray placement, jintArray ints) {
  return guarded(env, [&]() -> jint {
    char* text = nullptr;
    int32_t v[2] = {0, 0};
    edgecpm_status st = edgecpm_model_info(handle<edgecpm_model>(h), &text, &v[0], &v[1]);
    if (st != EDGECPM_OK) return st;
    if (!put_string(env, placement, text)) return kFailed;
    jint iv[2] = {v[0], v[1]};
    env->SetIntArrayRegion(ints, 0, 2, iv);
    return env->ExceptionCheck() ? kFailed : EDGECPM_OK;
  });
}

// prompt != null: edgecpm_generate (from an empty state); else edgecpm_generate_tokens(ids) after the state.
JNIEXPORT jint JNICALL Java_ai_edgecpm_Edgecpm_nGenerate(JNIEnv* env, jclass, jlong h, jbyteArray prompt, jintArray ids,
                                                        jlongArray ints, jdoubleArray reals, jobjectArray stop,
                                                        jobject sink, jobjectArray text_out) {
  return guarded(env, [&]() -> jint {
    Params params;
    if (!params.read(env, ints, reals, stop)) return kFailed;
    Stream s{env, sink};
    char* text = nullptr;
    edgecpm_status st;
    if (prompt) {
      std::string p;
      if (!bytes(env, prompt, &p)) return kFailed;
      st = edgecpm_generate(handle<edgecpm_model>(h), p.c_str(), &params.p, on_piece, &s, &text);
    } else {
      jsize n = env->GetArrayLength(ids);
      std::vector<int32_t> v(static_cast<size_t>(n));
      if (n) env->GetIntArrayRegion(ids, 0, n, reinterpret_cast<jint*>(v.data()));
      if (env->ExceptionCheck()) return kFailed;
      st = edgecpm_generate_tokens(handle<edgecpm_model>(h), v.data(), v.size(), &params.p, on_piece, &s, &text);
    }
    if (s.java_exception) {
      edgecpm_free(text);
      return kFailed;
    }
    if (st != EDGECPM_OK) return st;
    return put_string(env, text_out, text) ? EDGECPM_OK : kFailed;
  });
}

// out = {prompt_tokens, generated_tokens, prefill_tps, decode_tps, position, finish_reason}
JNIEXPORT jint JNICALL Java_ai_edgecpm_Edgecpm_nStats(JNIEnv* env, jclass, jlong h, jdoubleArray out) {
  edgecpm_stats s;
  std::memset(&s, 0, sizeof s);
  s.struct_size = sizeof s;
  edgecpm_status st = edgecpm_get_stats(handle<edgecpm_model>(h), &s);
  if (st != EDGECPM_OK) return st;
  jdouble v[6] = {static_cast<jdouble>(s.prompt_tokens), static_cast<jdouble>(s.generated_tokens), s.prefill_tps,
                  s.decode_tps, static_cast<jdouble>(s.position), static_cast<jdouble>(s.finish_reason)};
  env->SetDoubleArrayRegion(out, 0, 6, v);
  return env->ExceptionCheck() ? kFailed : EDGECPM_OK;
}

JNIEXPORT jint JNICALL Java_ai_edgecpm_Edgecpm_nReset(JNIEnv*, jclass, jlong h) { return edgecpm_reset(handle<edgecpm_model>(h)); }

JNIEXPORT jint JNICALL Java_ai_edgecpm_Edgecpm_nTokenize(JNIEnv* env, jclass, jlong h, jbyteArray text, jint add_bos,
                                                        jobjectArray out) {
  return guarded(env, [&]() -> jint {
    std::string t;
    if (!bytes(env, text, &t)) return kFailed;
    int32_t* ids = nullptr;
    size_t n = 0;
    edgecpm_status st = edgecpm_tokenize(handle<edgecpm_model>(h), t.c_str(), add_bos, &ids, &n);
    if (st != EDGECPM_OK) return st;
    jintArray a = env->NewIntArray(static_cast<jsize>(n));
    if (a && n) env->SetIntArrayRegion(a, 0, static_cast<jsize>(n), reinterpret_cast<const jint*>(ids));
    edgecpm_free(ids);
    if (!a) return kFailed;
    env->SetObjectArrayElement(out, 0, a);
    env->DeleteLocalRef(a);
    return env->ExceptionCheck() ? kFailed : EDGECPM_OK;
  });
}

JNIEXPORT jint JNICALL Java_ai_edgecpm_Edgecpm_nDetokenize(JNIEnv* env, jclass, jlong h, jintArray ids, jobjectArray out) {
  return guarded(env, [&]() -> jint {
    jsize n = env->GetArrayLength(ids);
    std::vector<int32_t> v(static_cast<size_t>(n));
    if (n) env->GetIntArrayRegion(ids, 0, n, reinterpret_cast<jint*>(v.data()));
    if (env->ExceptionCheck()) return kFailed;
    char* text = nullptr;
    edgecpm_status st = edgecpm_detokenize(handle<edgecpm_model>(h), v.data(), v.size(), &text);
    if (st != EDGECPM_OK) return st;
    return put_string(env, out, text) ? EDGECPM_OK : kFailed;
  });
}

JNIEXPORT jint JNICALL Java_ai_edgecpm_Edgecpm_nApplyChatTemplate(JNIEnv* env, jclass, jlong h, jobjectArray roles,
                                                                 jobjectArray contents, jboolean add_generation_prompt,
                                                                 jobjectArray out) {
  return guarded(env, [&]() -> jint {
    jsize n = env->GetArrayLength(roles);
    std::vector<std::string> text(static_cast<size_t>(n) * 2);
    for (jsize k = 0; k < 2 * n; ++k) {
      auto a = static_cast<jbyteArray>(env->GetObjectArrayElement(k < n ? roles : contents, k % n));
      bool ok = bytes(env, a, &text[static_cast<size_t>(k)]);
      if (a) env->DeleteLocalRef(a);
      if (!ok) return kFailed;
    }
    std::vector<const char*> r, c;
    for (jsize k = 0; k < n; ++k) {
      r.push_back(text[static_cast<size_t>(k)].c_str());
      c.push_back(text[static_cast<size_t>(n + k)].c_str());
    }
    char* result = nullptr;
    edgecpm_status st = edgecpm_apply_chat_template(handle<edgecpm_model>(h), r.data(), c.data(), static_cast<size_t>(n),
                                                    add_generation_prompt ? 1 : 0, &result);
    if (st != EDGECPM_OK) return st;
    return put_string(env, out, result) ? EDGECPM_OK : kFailed;
  });
}

JNIEXPORT jint JNICALL Java_ai_edgecpm_Edgecpm_nSnapshotTake(JNIEnv* env, jclass, jlong h, jlongArray out) {
  edgecpm_snapshot* s = nullptr;
  edgecpm_status st = edgecpm_snapshot_take(handle<edgecpm_model>(h), &s);
  if (st == EDGECPM_OK) put_long(env, out, s);
  return st;
}

JNIEXPORT jint JNICALL Java_ai_edgecpm_Edgecpm_nSnapshotRestore(JNIEnv*, jclass, jlong h, jlong snap) {
  return edgecpm_snapshot_restore(handle<edgecpm_model>(h), handle<edgecpm_snapshot>(snap));
}

JNIEXPORT void JNICALL Java_ai_edgecpm_Edgecpm_nSnapshotFree(JNIEnv*, jclass, jlong snap) {
  edgecpm_snapshot_free(handle<edgecpm_snapshot>(snap));
}

JNIEXPORT jint JNICALL Java_ai_edgecpm_Edgecpm_nChatCreate(JNIEnv* env, jclass, jlong h, jbyteArray system, jlongArray out) {
  return guarded(env, [&]() -> jint {
    std::string sys;
    bool has_sys;
    if (!bytes(env, system, &sys, &has_sys)) return kFailed;
    edgecpm_chat* c = nullptr;
    edgecpm_status st = edgecpm_chat_create(handle<edgecpm_model>(h), has_sys ? sys.c_str() : nullptr, &c);
    if (st == EDGECPM_OK) put_long(env, out, c);
    return st;
  });
}

JNIEXPORT jint JNICALL Java_ai_edgecpm_Edgecpm_nChatSend(JNIEnv* env, jclass, jlong chat, jbyteArray content,
                                                        jlongArray ints, jdoubleArray reals, jobjectArray stop,
                                                        jobject sink, jobjectArray text_out) {
  return guarded(env, [&]() -> jint {
    Params params;
    std::string c;
    if (!params.read(env, ints, reals, stop) || !bytes(env, content, &c)) return kFailed;
    Stream s{env, sink};
    char* text = nullptr;
    edgecpm_status st = edgecpm_chat_send(handle<edgecpm_chat>(chat), c.c_str(), &params.p, on_piece, &s, &text);
    if (s.java_exception) {
      edgecpm_free(text);
      return kFailed;
    }
    if (st != EDGECPM_OK) return st;
    return put_string(env, text_out, text) ? EDGECPM_OK : kFailed;
  });
}

JNIEXPORT jint JNICALL Java_ai_edgecpm_Edgecpm_nChatAdd(JNIEnv* env, jclass, jlong chat, jbyteArray role,
                                                       jbyteArray content) {
  return guarded(env, [&]() -> jint {
    std::string r, c;
    if (!bytes(env, role, &r) || !bytes(env, content, &c)) return kFailed;
    return edgecpm_chat_add(handle<edgecpm_chat>(chat), r.c_str(), c.c_str());
  });
}

JNIEXPORT jint JNICALL Java_ai_edgecpm_Edgecpm_nChatLastPrefill(JNIEnv*, jclass, jlong chat) {
  return edgecpm_chat_last_prefill(handle<edgecpm_chat>(chat));
}

JNIEXPORT jint JNICALL Java_ai_edgecpm_Edgecpm_nChatReset(JNIEnv*, jclass, jlong chat) {
  return edgecpm_chat_reset(handle<edgecpm_chat>(chat));
}

JNIEXPORT void JNICALL Java_ai_edgecpm_Edgecpm_nChatDestroy(JNIEnv*, jclass, jlong chat) {
  edgecpm_chat_destroy(handle<edgecpm_chat>(chat));
}

}  // extern "C"
