// Placeholder: implemented by the training-stack work (see normalization.h).
#include "normalization.h"
