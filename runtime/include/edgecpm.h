/* edgecpm: on-device LLM runtime, C API.
 *
 * C++ inside, C at this boundary, so JNI, Swift, C# and Python ctypes can bind it.
 *
 * Conventions
 * - Handles are opaque; every create/open has a destroy/close. Destroy functions accept NULL.
 * - Every function that can fail returns an edgecpm_status; EDGECPM_OK (0) is success. The message of
 *   the last failure on the calling thread is edgecpm_last_error(). Nothing aborts, exits or throws
 *   across this boundary.
 * - Text in and out is UTF-8 (paths too). The streaming callback receives only complete UTF-8 pieces.
 * - Returned strings and arrays are owned by the caller and freed with edgecpm_free().
 * - Parameters are plain structs with a leading struct_size (set by the *_default() functions): a
 *   newer library reads only the fields an older caller knows, so fields can be added without
 *   breaking the ABI. Typed and discoverable, unlike string-keyed setters.
 * - Thread safety: a model (and the chats and snapshots made from it) is used by one thread at a
 *   time; different models may be used from different threads concurrently. edgecpm_version,
 *   edgecpm_api_version, edgecpm_last_error and edgecpm_free may be called from any thread.
 */
#ifndef EDGECPM_H
#define EDGECPM_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32)
#  if defined(EDGECPM_BUILDING)
#    define EDGECPM_API __declspec(dllexport)
#  else
#    define EDGECPM_API __declspec(dllimport)
#  endif
#else
#  define EDGECPM_API __attribute__((visibility("default")))
#endif

#define EDGECPM_API_VERSION 1

#ifdef __cplusplus
extern "C" {
#endif

typedef enum edgecpm_status {
  EDGECPM_OK = 0,
  EDGECPM_ERR_INVALID_ARGUMENT = 1, /* NULL handle, bad parameter value */
  EDGECPM_ERR_ARTIFACT = 2,         /* missing/corrupt folder or file, wrong format version */
  EDGECPM_ERR_RUNTIME = 3,          /* onnxruntime failed (or is too old) */
  EDGECPM_ERR_TOKENIZER = 4,        /* tokenizer library missing or failed */
  EDGECPM_ERR_INVALID_UTF8 = 5,     /* a text argument is not valid UTF-8 */
  EDGECPM_ERR_CONTEXT_OVERFLOW = 6, /* the tokens do not fit the allocated context */
  EDGECPM_ERR_NO_CHAT_TEMPLATE = 7,
  EDGECPM_ERR_INTERNAL = 8
} edgecpm_status;

typedef struct edgecpm_model edgecpm_model;       /* engine + state + tokenizer of one artifact */
typedef struct edgecpm_chat edgecpm_chat;         /* a conversation reusing the model's state */
typedef struct edgecpm_snapshot edgecpm_snapshot; /* fixed-size state + position (no KV copy) */

/* Library version string ("0.1.0"), static storage. */
EDGECPM_API const char* edgecpm_version(void);
/* EDGECPM_API_VERSION of the library; bindings compare it with the header they were built with. */
EDGECPM_API int edgecpm_api_version(void);
/* Message of the last failure on this thread ("" if none); valid until the next failing call. */
EDGECPM_API const char* edgecpm_last_error(void);
/* Frees a string or array returned by this library. NULL is fine. */
EDGECPM_API void edgecpm_free(void* p);

/* A one-line notice (UTF-8, no newline) and the caller's pointer; called on the thread that opens. */
typedef void (*edgecpm_log_fn)(const char* line, void* user);

typedef struct edgecpm_open_options {
  uint32_t struct_size;
  int32_t threads;              /* intra-op threads; 0 = onnxruntime's default */
  int32_t context;              /* tokens to allocate; 0 = min(4096, the artifact's context); NPU artifact: its context */
  const char* providers;        /* comma list in order, e.g. "xnnpack,cpu"; NULL = "cpu". CPU is always the fallback */
  const char* recurrent_kernel; /* "auto" | "function" | "ort" | "native"; NULL = "auto" */
  const char* ops_library;      /* libedgecpm_ops path for "native"; NULL = $EDGECPM_NATIVE_OPS */
  int32_t verify_hashes;        /* 1 = check every file's sha256 (sizes are always checked) */
  int32_t report_placement;     /* 1 = record where onnxruntime placed the nodes (edgecpm_model_info) */
  /* QNN (NPU artifacts, provider "qnn"): the plugin EP library (onnxruntime-qnn's
   * libonnxruntime_providers_qnn.so); NULL = $EDGECPM_QNN_LIBRARY, else onnxruntime's built-in QNN EP
   * where it has one (the onnxruntime-android-qnn AAR). */
  const char* qnn_library;
  const char* qnn_backend_path; /* NULL = $EDGECPM_QNN_BACKEND, else libQnnHtp.so beside qnn_library (or by name) */
  int32_t strict;               /* 1 = every node on the requested provider, else the open fails (no CPU fallback) */
  edgecpm_log_fn log;           /* one-line notices while opening (e.g. "running the NPU graphs on the CPU"); NULL = none */
  void* log_user;               /* passed to log */
} edgecpm_open_options;

EDGECPM_API void edgecpm_open_options_default(edgecpm_open_options* o);

/* Opens the artifact folder (docs/artifact.md). On failure *out is NULL. */
EDGECPM_API edgecpm_status edgecpm_open(const char* artifact_dir, const edgecpm_open_options* options,
                                        edgecpm_model** out);
EDGECPM_API void edgecpm_close(edgecpm_model* model);

/* Where the graph's nodes went: "CPUExecutionProvider 612" lines (an NPU artifact: one line per graph,
 * "decode: QNNExecutionProvider 1, QNN graph nodes 790; context cached in PATH") and the notices; the context. */
EDGECPM_API edgecpm_status edgecpm_model_info(const edgecpm_model* model, char** placement, int32_t* context,
                                              int32_t* vocab_size);

/* Token ids of `text` (UTF-8). add_bos: -1 = the artifact's rule, 0 = no, 1 = yes. */
EDGECPM_API edgecpm_status edgecpm_tokenize(edgecpm_model* model, const char* text, int add_bos, int32_t** ids,
                                            size_t* n_ids);
EDGECPM_API edgecpm_status edgecpm_detokenize(edgecpm_model* model, const int32_t* ids, size_t n_ids, char** text);

/* The artifact's chat template over n messages (roles[i], contents[i]); *text owned by the caller. */
EDGECPM_API edgecpm_status edgecpm_apply_chat_template(edgecpm_model* model, const char* const* roles,
                                                       const char* const* contents, size_t n,
                                                       int add_generation_prompt, char** text);

typedef struct edgecpm_gen_params {
  uint32_t struct_size;
  int32_t max_tokens;         /* default 256 */
  double temp;                /* 0 = greedy (default) */
  double top_p;               /* 1 = off */
  int32_t top_k;              /* 0 = off */
  double min_p;               /* 0 = off */
  double repetition_penalty;  /* 1 = off; over the last 64 tokens */
  int64_t seed;               /* < 0 = from the OS; same seed = same draws as the Python runtime */
  int32_t prefill_chunk;      /* default 512 */
  const char* const* stop;    /* stop strings (not included in the output) */
  size_t n_stop;
} edgecpm_gen_params;

EDGECPM_API void edgecpm_gen_params_default(edgecpm_gen_params* p);

/* Called with each new complete-UTF-8 piece (len bytes, not NUL-terminated; may be empty when a token
 * completes no character yet) and its token. Return nonzero to stop: the generation ends after it. */
typedef int (*edgecpm_stream_fn)(const char* piece, size_t len, int32_t token, void* user);

typedef enum edgecpm_finish { EDGECPM_FINISH_NONE = 0, EDGECPM_FINISH_STOP = 1, EDGECPM_FINISH_LENGTH = 2,
                              EDGECPM_FINISH_CALLBACK = 3 } edgecpm_finish;

typedef struct edgecpm_stats {
  uint32_t struct_size;
  int32_t prompt_tokens;      /* tokens prefilled by the last generation */
  int32_t generated_tokens;
  double prefill_tps;
  double decode_tps;
  int32_t position;           /* tokens the state holds now */
  int32_t finish_reason;      /* edgecpm_finish */
} edgecpm_stats;

/* Continue raw text from an empty state (the Python runtime's stream_generate). text_out (optional)
 * receives the whole continuation. */
EDGECPM_API edgecpm_status edgecpm_generate(edgecpm_model* model, const char* prompt, const edgecpm_gen_params* params,
                                            edgecpm_stream_fn fn, void* user, char** text_out);
/* Feed `ids` after the current state, then generate (the Python runtime's stream_tokens). */
EDGECPM_API edgecpm_status edgecpm_generate_tokens(edgecpm_model* model, const int32_t* ids, size_t n_ids,
                                                   const edgecpm_gen_params* params, edgecpm_stream_fn fn, void* user,
                                                   char** text_out);
/* Tokens generated by the last generation (ids owned by the caller). */
EDGECPM_API edgecpm_status edgecpm_last_tokens(edgecpm_model* model, int32_t** ids, size_t* n_ids);
EDGECPM_API edgecpm_status edgecpm_get_stats(const edgecpm_model* model, edgecpm_stats* stats);

/* Empty the state. */
EDGECPM_API edgecpm_status edgecpm_reset(edgecpm_model* model);
/* Raw steps for benchmarks and tests: feed tokens, keep the state; logits of the last one (optional, vocab floats). */
EDGECPM_API edgecpm_status edgecpm_feed(edgecpm_model* model, const int32_t* ids, size_t n_ids, int32_t prefill_chunk,
                                        float* logits_out);

EDGECPM_API edgecpm_status edgecpm_snapshot_take(edgecpm_model* model, edgecpm_snapshot** out);
EDGECPM_API edgecpm_status edgecpm_snapshot_restore(edgecpm_model* model, const edgecpm_snapshot* snap);
EDGECPM_API void edgecpm_snapshot_free(edgecpm_snapshot* snap);

/* Multi-turn chat over the model's state: each turn prefills only what the state does not hold.
 * system may be NULL. A chat borrows the model: close the chat first. */
EDGECPM_API edgecpm_status edgecpm_chat_create(edgecpm_model* model, const char* system, edgecpm_chat** out);
EDGECPM_API edgecpm_status edgecpm_chat_send(edgecpm_chat* chat, const char* content, const edgecpm_gen_params* params,
                                             edgecpm_stream_fn fn, void* user, char** reply);
/* Append a message without generating (e.g. a turn answered elsewhere, like the cloud): the next send
 * renders the whole conversation and still prefills only what the state does not hold. */
EDGECPM_API edgecpm_status edgecpm_chat_add(edgecpm_chat* chat, const char* role, const char* content);
/* Tokens prefilled for the last turn (the rest came from the state). */
EDGECPM_API int32_t edgecpm_chat_last_prefill(const edgecpm_chat* chat);
EDGECPM_API edgecpm_status edgecpm_chat_reset(edgecpm_chat* chat);
EDGECPM_API void edgecpm_chat_destroy(edgecpm_chat* chat);

#ifdef __cplusplus
}
#endif
#endif /* EDGECPM_H */
