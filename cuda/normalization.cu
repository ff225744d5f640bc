// Placeholder: implemented by the training-stack work (see normalization.cuh).
#include "normalization.cuh"
