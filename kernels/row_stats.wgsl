// Next-token statistics of each logits row over the real vocabulary (ids < vocab), so that
// only four numbers per row come back to the host instead of the whole padded vocabulary:
//   stats[row] = (max logit, logsumexp, argmax id, logit of the target id)
// p(target) = exp(target - lse), p(max) = exp(max - lse). Ties resolve to the lowest id.

struct Params {
  rows: u32,
  vocab: u32, // real vocabulary: softmax over ids < vocab
  stride: u32, // row stride of logits (the padded vocabulary)
  _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// logits: (rows, stride) f32
@group(0) @binding(1) var<storage, read> logits: array<f32>;
// targets: (rows) u32
@group(0) @binding(2) var<storage, read> targets: array<u32>;
// stats: (rows, 4) f32; the argmax is stored as an f32 value (exact below 2^24)
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;

const WG: u32 = 256u;
var<workgroup> best_val: array<f32, WG>;
var<workgroup> best_idx: array<u32, WG>;
var<workgroup> sums: array<f32, WG>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.stride;
  let i = lid.x;

  var m = -3.4028235e38;
  var mi = 0xffffffffu;
  for (var v = i; v < p.vocab; v += WG) {
    let x = logits[base + v];
    if (x > m) { m = x; mi = v; } // v increases, so the first maximum of this lane is kept
  }
  best_val[i] = m;
  best_idx[i] = mi;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (i < s) {
      let ov = best_val[i + s];
      let oi = best_idx[i + s];
      if (ov > best_val[i] || (ov == best_val[i] && oi < best_idx[i])) {
        best_val[i] = ov;
        best_idx[i] = oi;
      }
    }
    workgroupBarrier();
  }
  let mx = best_val[0];

  var acc = 0.0;
  for (var v = i; v < p.vocab; v += WG) {
    acc += exp(logits[base + v] - mx);
  }
  sums[i] = acc;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (i < s) { sums[i] += sums[i + s]; }
    workgroupBarrier();
  }
  if (i == 0u) {
    stats[row * 4u] = mx;
    stats[row * 4u + 1u] = mx + log(sums[0]);
    stats[row * 4u + 2u] = f32(best_idx[0]);
    stats[row * 4u + 3u] = logits[base + targets[row]];
  }
}
