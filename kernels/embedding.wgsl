// Embedding lookup: copy the rows of the token ids that fall in one chunk of the table.
// The (vocab_padded, d_model) table is split into row chunks so each fits one storage binding;
// the host dispatches once per chunk.

struct Params {
  n_tokens: u32,
  d_model: u32,
  row_start: u32, // first vocabulary row held by this chunk
  row_count: u32, // rows in this chunk
}

@group(0) @binding(0) var<uniform> p: Params;
// ids: (n_tokens) u32
@group(0) @binding(1) var<storage, read> ids: array<u32>;
// table: (row_count, d_model) f32, rows [row_start, row_start + row_count) of the embedding
@group(0) @binding(2) var<storage, read> table: array<f32>;
// out: (n_tokens, d_model) f32
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.n_tokens * p.d_model) { return; }
  let t = i / p.d_model;
  let c = i % p.d_model;
  let id = ids[t];
  if (id < p.row_start || id >= p.row_start + p.row_count) { return; }
  out[i] = table[(id - p.row_start) * p.d_model + c];
}
