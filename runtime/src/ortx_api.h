// The few onnxruntime-extensions C API functions edgecpm calls, declared from its documented C API
// (include/ortx_tokenizer.h, ortx_utils.h of onnxruntime-extensions), resolved at run time with dlsym.
#pragma once
#include <cstddef>
#include <cstdint>

extern "C" {
typedef int extError_t;  // kOrtxOK = 0
typedef uint32_t extTokenId_t;
typedef struct { int ext_kind_; } OrtxObject;
typedef OrtxObject OrtxTokenizer;
typedef OrtxObject OrtxStringArray;
typedef OrtxObject OrtxTokenId2DArray;
typedef OrtxObject OrtxTensorResult;
typedef OrtxObject OrtxTensor;

typedef extError_t (*OrtxCreateTokenizerWithOptions_t)(OrtxTokenizer** tokenizer, const char* path, const char* keys[],
                                                       const char* values[], size_t n);
typedef extError_t (*OrtxTokenize_t)(const OrtxTokenizer*, const char* input[], size_t batch, OrtxTokenId2DArray** out);
typedef extError_t (*OrtxTokenId2DArrayGetItem_t)(const OrtxTokenId2DArray*, size_t index, const extTokenId_t** item,
                                                  size_t* length);
typedef extError_t (*OrtxDetokenize1D_t)(const OrtxTokenizer*, const extTokenId_t* input, size_t len, OrtxStringArray** out);
typedef extError_t (*OrtxStringArrayGetItem_t)(const OrtxStringArray*, size_t index, const char** item);
typedef extError_t (*OrtxApplyChatTemplate_t)(const OrtxTokenizer*, const char* template_str, const char* input,
                                              const char* tools, OrtxTensorResult** output, bool add_generation_prompt,
                                              bool tokenize);
typedef extError_t (*OrtxTensorResultGetAt_t)(OrtxTensorResult*, size_t index, OrtxTensor** tensor);
typedef extError_t (*OrtxGetTensorData_t)(OrtxTensor*, const void** data, const int64_t** shape, size_t* num_dims);
typedef extError_t (*OrtxDispose_t)(OrtxObject** object);
typedef const char* (*OrtxGetLastErrorMessage_t)(void);
}
