// The weight-norm per-channel scalar maths shared by cpu/ and cuda/, where both backends compute the same
// expression in the same precision (so the results agree bit for bit); the sums feeding them differ by backend.
//
// Forward:  norm = max(||v||, eps), scale = g / norm, w = scale * v.
// Backward: dg = <dw, v> / norm, c1 = g / norm, c2 = g * dg / norm^2, dv = c1 * dw - c2 * v.
#pragma once

#include "weightnorm/host_device.h"

namespace weightnorm {

// g / norm: the forward's scale and the backward's c1. (The CPU's vector paths divide in double and round once:
// that is the same float, as a double quotient of two floats rounds to the correctly rounded float quotient.)
WN_HOST_DEVICE float g_over_norm(float g, float norm) { return g / norm; }

// Where the forward's floor was active (norm <= eps) the norm is the constant eps, so the projection term of the
// backward (c2) vanishes.
WN_HOST_DEVICE bool weightnorm_projection_active(float norm, float eps) { return norm > eps; }

// c2 = g * dot / norm^3 with dot = <dw, v>, two ways:
//  from_dot  in double (the CPU, whose sums are double): norm^3 cannot overflow there.
//  from_dg   in float (CUDA, float sums): through dg = dot / norm, since norm^3 overflows float for norm > ~7e12.
WN_HOST_DEVICE double weightnorm_projection_from_dot(double g, double dot, double norm) {
  return g * dot / (norm * norm * norm);
}
WN_HOST_DEVICE float weightnorm_projection_from_dg(float g, float dg, float norm) { return g * dg / (norm * norm); }

}  // namespace weightnorm
