// Placeholder: implemented by the training-stack work (see reduce.h).
#include "reduce.h"
