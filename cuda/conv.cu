// Placeholder: implemented by the training-stack work (see conv.cuh).
#include "conv.cuh"
