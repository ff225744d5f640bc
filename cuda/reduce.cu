// Placeholder: implemented by the training-stack work (see reduce.cuh).
#include "reduce.cuh"
