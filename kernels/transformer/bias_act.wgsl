// Bias and activation, in place: x[r, c] := act(x[r, c] + bias[c]) (no bias when has_bias = 0).
//   act 0: identity (a projection's bias alone)
//   act 1: GELU with the exact normal CDF, x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)) (GPT-NeoX "gelu")
//   act 2: GELU, tanh form, x/2 * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) (GPT-2 "gelu_new")
// WGSL has no erf: Phi comes from Abramowitz & Stegun 7.1.26,
//   erfc(z) = poly(t) * exp(−z²), t = 1 / (1 + 0.3275911 z), z >= 0, |error| <= 1.5e-7,
// used as Phi(x) = erfc(|x|/sqrt 2)/2 for x < 0 and 1 − that for x >= 0, so GELU's absolute
// error is at most |x| * 0.75e-7 (f32 rounding is 6e-8 relative). tanh is formed from exp(−2|u|),
// which cannot overflow for any input (tanh() of large arguments is NaN on some drivers).
// One invocation per element.

struct Params {
  rows: u32,
  dim: u32,
  act: u32,
  has_bias: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// x: (rows, dim) f32, updated in place
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
// bias: (dim) f32 (a placeholder when has_bias = 0)
@group(0) @binding(2) var<storage, read> bias: array<f32>;

fn phi(v: f32) -> f32 {
  let z = abs(v) * 0.70710678118654752;
  let t = 1.0 / (1.0 + 0.3275911 * z);
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  let tail = 0.5 * poly * exp(-z * z); // Phi(−|v|)
  return select(1.0 - tail, tail, v < 0.0);
}

fn tanh_safe(u: f32) -> f32 {
  let e = exp(-2.0 * abs(u));
  return sign(u) * (1.0 - e) / (1.0 + e);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.rows * p.dim) { return; }
  var v = x[i];
  if (p.has_bias != 0u) { v += bias[i % p.dim]; }
  if (p.act == 1u) {
    v = v * phi(v);
  } else if (p.act == 2u) {
    v = 0.5 * v * (1.0 + tanh_safe(0.79788456080286536 * (v + 0.044715 * v * v * v)));
  }
  x[i] = v;
}
