// Element types of a tensor, shared by binding/, cpu/ and cuda/ (cast converts between any two).
#pragma once
#include <cstddef>
#include <cstdint>

namespace weightnorm {

// float32 everywhere; bfloat16 for the per-element tensors of weightNorm, weightNormBackward and matmul; int32
// (indices, labels, integer arithmetic) and bool (masks and comparison results, one byte per element, 0 or 1) for
// the tensor math ops of the pointwise family.
enum class DType { kFloat32, kBFloat16, kInt32, kBool };

inline size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 4;
    case DType::kBFloat16: return 2;
    case DType::kInt32: return 4;
    case DType::kBool: return 1;
  }
  return 4;
}

}  // namespace weightnorm
