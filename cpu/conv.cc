// Placeholder: implemented by the training-stack work (see conv.h).
#include "conv.h"
