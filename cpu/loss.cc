// Placeholder: implemented by the training-stack work (see loss.h).
#include "loss.h"
