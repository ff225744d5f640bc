// Placeholder: implemented by the training-stack work (see gemm.h).
#include "gemm.h"
