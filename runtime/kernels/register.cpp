// libedgecpm_ops: registers ai.edgecpm LinearAttention, CausalConvWithState and AddBlockMins (CPU, fp32) with
// onnxruntime. It links no onnxruntime: it uses the OrtApi that RegisterCustomOps is handed, so the
// same library serves the Python runtime (SessionOptions.register_custom_ops_library) and libedgecpm.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "onnxruntime_cxx_api.h"
#include "ops.h"

namespace {
using edgecpm_ops::Rule;

const OrtValue* input(const OrtApi& api, OrtKernelContext* ctx, size_t i) {
  size_t count = 0;
  Ort::ThrowOnError(api.KernelContext_GetInputCount(ctx, &count));
  if (i >= count) return nullptr;
  const OrtValue* v = nullptr;
  Ort::ThrowOnError(api.KernelContext_GetInput(ctx, i, &v));
  return v;
}

std::vector<int64_t> shape_of(const OrtValue* v) {
  return Ort::ConstValue(v).GetTensorTypeAndShapeInfo().GetShape();
}

const float* data_of(const OrtValue* v) { return v ? Ort::ConstValue(v).GetTensorData<float>() : nullptr; }

float* output(OrtKernelContext* ctx, size_t i, const std::vector<int64_t>& shape) {
  Ort::KernelContext kc(ctx);
  return kc.GetOutput(i, shape).GetTensorMutableData<float>();
}

template <typename T>
T attr(const OrtKernelInfo* info, const char* name, T fallback) {
  try {
    return Ort::ConstKernelInfo(info).GetAttribute<T>(name);
  } catch (const Ort::Exception&) {
    return fallback;
  }
}

[[noreturn]] void fail(const std::string& msg) { throw Ort::Exception(std::string("ai.edgecpm: ") + msg, ORT_INVALID_ARGUMENT); }

struct LinearAttentionKernel {
  const OrtApi& api;
  int64_t hq, hkv;
  Rule rule;
  float scale;
  LinearAttentionKernel(const OrtApi& a, const OrtKernelInfo* info) : api(a) {
    hq = attr<int64_t>(info, "q_num_heads", 0);
    hkv = attr<int64_t>(info, "kv_num_heads", 0);
    scale = attr<float>(info, "scale", 0.f);
    std::string r = attr<std::string>(info, "update_rule", "gated_delta");
    if (r == "linear") rule = Rule::Linear;
    else if (r == "gated") rule = Rule::Gated;
    else if (r == "delta") rule = Rule::Delta;
    else if (r == "gated_delta") rule = Rule::GatedDelta;
    else fail("LinearAttention update_rule '" + r + "' is not linear, gated, delta or gated_delta");
    if (hq <= 0 || hkv <= 0 || (hq % hkv && hkv % hq)) fail("LinearAttention needs q_num_heads and kv_num_heads that divide");
  }

  struct Job {
    Rule rule;
    const edgecpm_ops::LinearAttentionShape* s;
    const float *q, *k, *v, *g, *b, *past;
    float *state, *out;
  };
  static void run_one(void* p, size_t i) {
    auto* j = static_cast<Job*>(p);
    edgecpm_ops::linear_attention_head(j->rule, *j->s, j->q, j->k, j->v, j->g, j->b, j->past, j->state, j->out,
                                       static_cast<int64_t>(i) / j->s->hkv, static_cast<int64_t>(i) % j->s->hkv);
  }

  void Compute(OrtKernelContext* ctx) {
    const OrtValue *q = input(api, ctx, 0), *k = input(api, ctx, 1), *v = input(api, ctx, 2);
    const OrtValue *past = input(api, ctx, 3), *decay = input(api, ctx, 4), *beta = input(api, ctx, 5);
    auto qs = shape_of(q), ks = shape_of(k), vs = shape_of(v);
    if (qs.size() != 3 || ks.size() != 3 || vs.size() != 3) fail("LinearAttention takes 3-D query, key and value [B, T, H*d]");
    edgecpm_ops::LinearAttentionShape s{};
    s.B = qs[0];
    s.T = qs[1];
    s.hq = hq;
    s.hkv = hkv;
    s.dk = ks[2] / hkv;
    s.dv = vs[2] / hkv;
    if (qs[2] != hq * s.dk || ks[2] != hkv * s.dk || vs[2] != hkv * s.dv || ks[0] != s.B || ks[1] != s.T ||
        vs[0] != s.B || vs[1] != s.T)
      fail("LinearAttention query/key/value shapes do not match the head counts");
    s.scale = scale != 0.f ? scale : static_cast<float>(1.0 / std::sqrt(static_cast<double>(s.dk)));
    bool is_gated = rule == Rule::Gated || rule == Rule::GatedDelta;
    bool is_delta = rule == Rule::Delta || rule == Rule::GatedDelta;
    if (is_gated) {
      if (!decay) fail("LinearAttention " + std::string(rule == Rule::Gated ? "gated" : "gated_delta") + " needs decay");
      auto ds = shape_of(decay);
      int64_t last = ds.back();
      if (last == hkv * s.dk && s.dk != 1) s.decay_per_key = true;
      else if (last != hkv) fail("LinearAttention decay must be [B, T, kv_heads] or [B, T, kv_heads * d_k]");
    }
    if (is_delta) {
      if (!beta) fail("LinearAttention delta rules need beta");
      auto bs = shape_of(beta);
      int64_t n = 1;
      for (auto d : bs) n *= d;
      if (n == s.B * s.T * hkv) s.beta_per_head = true;
      else if (n != s.B * s.T) fail("LinearAttention beta must be [B, T, kv_heads] or [B, T, 1]");
    }
    const int64_t heads = std::max(hq, hkv);
    float* out = output(ctx, 0, {s.B, s.T, heads * s.dv});
    float* state = output(ctx, 1, {s.B, hkv, s.dk, s.dv});
    if (past) {
      auto ps = shape_of(past);
      if (ps.size() != 4 || ps[0] != s.B || ps[1] != hkv || ps[2] != s.dk || ps[3] != s.dv)
        fail("LinearAttention past_state must be [B, kv_heads, d_k, d_v]");
    }
    Job job{rule, &s, data_of(q), data_of(k), data_of(v), data_of(decay), data_of(beta), data_of(past), state, out};
    const size_t total = static_cast<size_t>(s.B * hkv);
    OrtStatus* st = total > 1 ? api.KernelContext_ParallelFor(ctx, run_one, total, 0, &job) : nullptr;
    if (total <= 1) for (size_t i = 0; i < total; ++i) run_one(&job, i);
    Ort::ThrowOnError(st);
  }
};

struct CausalConvKernel {
  const OrtApi& api;
  bool silu;
  CausalConvKernel(const OrtApi& a, const OrtKernelInfo* info) : api(a) {
    std::string act = attr<std::string>(info, "activation", "none");
    if (act == "silu" || act == "swish") silu = true;
    else if (act == "none") silu = false;
    else fail("CausalConvWithState activation '" + act + "' is not silu, swish or none");
  }
  void Compute(OrtKernelContext* ctx) {
    const OrtValue *x = input(api, ctx, 0), *w = input(api, ctx, 1), *bias = input(api, ctx, 2), *past = input(api, ctx, 3);
    auto xs = shape_of(x), ws = shape_of(w);
    if (xs.size() != 3 || ws.size() != 3 || ws[1] != 1 || ws[0] != xs[1])
      fail("CausalConvWithState takes input [B, C, L] and a depthwise weight [C, 1, K]");
    const int64_t B = xs[0], C = xs[1], L = xs[2], K = ws[2];
    float* out = output(ctx, 0, {B, C, L});
    float* state = output(ctx, 1, {B, C, K - 1});
    const size_t n = static_cast<size_t>(B * C * (K - 1));
    if (past) {
      auto ps = shape_of(past);
      if (ps.size() != 3 || ps[0] != B || ps[1] != C || ps[2] != K - 1) fail("CausalConvWithState past_state must be [B, C, K-1]");
      std::memcpy(state, data_of(past), n * sizeof(float));
    } else {
      std::memset(state, 0, n * sizeof(float));
    }
    ConvJob job{C, L, K, data_of(x), data_of(w), data_of(bias), state, out, silu, B * C};
    // Channels are independent: blocks of kConvRows run on onnxruntime's intra-op threads.
    const size_t blocks = static_cast<size_t>((B * C + kConvRows - 1) / kConvRows);
    OrtStatus* st = blocks > 1 ? api.KernelContext_ParallelFor(ctx, run_block, blocks, 0, &job) : nullptr;
    if (blocks <= 1) run_block(&job, 0);
    Ort::ThrowOnError(st);
  }

 private:
  static constexpr int64_t kConvRows = 64;
  struct ConvJob {
    int64_t C, L, K;
    const float *x, *w, *bias;
    float *state, *out;
    bool silu;
    int64_t rows;
  };
  static void run_block(void* p, size_t i) {
    auto* j = static_cast<ConvJob*>(p);
    const int64_t begin = static_cast<int64_t>(i) * kConvRows;
    edgecpm_ops::causal_conv_channels(j->C, j->L, j->K, j->x, j->w, j->bias, j->state, j->out, j->silu, begin,
                                      std::min(begin + kConvRows, j->rows));
  }
};

// out = y + blocksums(x) @ mins; y [..., N], x [..., K] with the same leading dims, mins [K/block, N] fp32 or fp16.
struct BlockMinsKernel {
  const OrtApi& api;
  int64_t block;
  BlockMinsKernel(const OrtApi& a, const OrtKernelInfo* info) : api(a) {
    block = attr<int64_t>(info, "block_size", 0);
    if (block <= 0) fail("AddBlockMins needs block_size > 0");
  }
  void Compute(OrtKernelContext* ctx) {
    const OrtValue *y = input(api, ctx, 0), *x = input(api, ctx, 1), *mins = input(api, ctx, 2);
    auto ys = shape_of(y), xs = shape_of(x);
    auto mi = Ort::ConstValue(mins).GetTensorTypeAndShapeInfo();
    auto ms = mi.GetShape();
    const auto mt = mi.GetElementType();
    if (mt != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT && mt != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) fail("AddBlockMins mins must be float or float16");
    if (ys.empty() || ys.size() != xs.size() || ms.size() != 2) fail("AddBlockMins takes y [..., N], x [..., K] and mins [K/block, N]");
    int64_t rows = 1;
    for (size_t i = 0; i + 1 < ys.size(); ++i) {
      if (ys[i] != xs[i]) fail("AddBlockMins y and x must have the same leading dims");
      rows *= ys[i];
    }
    const int64_t N = ys.back(), K = xs.back();
    if (ms[1] != N || ms[0] * block != K) fail("AddBlockMins mins must be [K/block_size, N] for x [..., K] and y [..., N]");
    Job job{{rows, K, N, block, data_of(y), data_of(x), Ort::ConstValue(mins).GetTensorRawData(),
             mt == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16, output(ctx, 0, ys)}, 1, 1};
    // Small work runs here; more runs on onnxruntime's intra-op threads, as blocks of rows, or of columns for a few rows.
    size_t parts = 1;
    if (rows * ms[0] * N >= kParallelWork) {
      job.row_parts = (rows + kRows - 1) / kRows;
      job.col_parts = job.row_parts > 1 ? 1 : (N + kCols - 1) / kCols;
      parts = static_cast<size_t>(job.row_parts * job.col_parts);
    }
    OrtStatus* st = parts > 1 ? api.KernelContext_ParallelFor(ctx, run_part, parts, 0, &job) : nullptr;
    if (parts <= 1) edgecpm_ops::add_block_mins(job.j);
    Ort::ThrowOnError(st);
  }

 private:
  static constexpr int64_t kRows = 16, kCols = 256;
  static constexpr int64_t kParallelWork = 1 << 16;  // multiply-adds below which threads cost more than they save
  struct Job {
    edgecpm_ops::BlockMinsJob j;
    int64_t row_parts, col_parts;
  };
  static void run_part(void* p, size_t i) {
    const auto* job = static_cast<const Job*>(p);
    const int64_t r = static_cast<int64_t>(i) / job->col_parts, c = static_cast<int64_t>(i) % job->col_parts;
    const int64_t cols = job->col_parts > 1 ? kCols : job->j.N;  // rows split: every part takes all columns
    edgecpm_ops::add_block_mins_part(job->j, r * kRows, std::min((r + 1) * kRows, job->j.rows), c * cols,
                                     std::min((c + 1) * cols, job->j.N));
  }
};

template <typename Kernel, int NIn, int NOut = 2>
struct Op : Ort::CustomOpBase<Op<Kernel, NIn, NOut>, Kernel> {
  const char* name;
  int required;
  Op(const char* n, int req) : name(n), required(req) {}
  void* CreateKernel(const OrtApi& api, const OrtKernelInfo* info) const { return new Kernel(api, info); }
  const char* GetName() const { return name; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return NIn; }
  ONNXTensorElementDataType GetInputType(size_t i) const {  // AddBlockMins' mins: float or float16, checked in Compute
    return std::is_same<Kernel, BlockMinsKernel>::value && i == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED
                                                                   : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return static_cast<int>(i) < required ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
  size_t GetOutputTypeCount() const { return NOut; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t) const { return INPUT_OUTPUT_REQUIRED; }
};

std::mutex g_mu;
// One domain per registration; they live until the library is unloaded, which onnxruntime does only after
// the sessions and session options that registered it are gone.
std::vector<Ort::CustomOpDomain>& domains() {
  static std::vector<Ort::CustomOpDomain> d;
  return d;
}
}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (!api) {
    const OrtApi* old = api_base->GetApi(1);
    return old ? old->CreateStatus(ORT_FAIL, "libedgecpm_ops needs onnxruntime >= 1.29 (API version 29)") : nullptr;
  }
  Ort::InitApi(api);
  static Op<LinearAttentionKernel, 6> linear_attention("LinearAttention", 3);
  static Op<CausalConvKernel, 4> causal_conv("CausalConvWithState", 2);
  static Op<BlockMinsKernel, 3, 1> block_mins("AddBlockMins", 3);
  try {
    std::lock_guard<std::mutex> lock(g_mu);
    Ort::CustomOpDomain domain("ai.edgecpm");
    domain.Add(&linear_attention);
    domain.Add(&causal_conv);
    domain.Add(&block_mins);
    Ort::UnownedSessionOptions(options).Add(domain);
    domains().push_back(std::move(domain));
  } catch (const Ort::Exception& e) {
    return api->CreateStatus(ORT_FAIL, e.what());
  }
  return nullptr;
}
