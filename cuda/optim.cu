// Placeholder: implemented by the training-stack work (see optim.cuh).
#include "optim.cuh"
