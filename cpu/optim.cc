// Placeholder: implemented by the training-stack work (see optim.h).
#include "optim.h"
