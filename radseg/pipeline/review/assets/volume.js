// radseg review: a case's volumes decoded, and the display geometry shared by every view.
// Arrays arrive as base64 of zlib-compressed little-endian bytes, index i + nI * (j + nJ * k),
// on the display grid: i towards the patient's right (R), j anterior (A), k superior (S).
"use strict";

async function inflateBase64(text, Type) {
  const bytes = Uint8Array.fromBase64 ? Uint8Array.fromBase64(text) : Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
  return new Type(await new Response(stream).arrayBuffer());
}

async function decodeCase(data) {
  const [pred, truth, image, probability] = await Promise.all([
    inflateBase64(data.pred, Uint8Array),
    data.truth ? inflateBase64(data.truth, Uint8Array) : null,
    data.image ? inflateBase64(data.image.data, Int16Array) : null,
    data.probability ? inflateBase64(data.probability, Uint8Array) : null,
  ]);
  const n = data.shape;
  const affine = data.affine;  // display index -> RAS mm, row-major 4x4
  const spacing = [0, 1, 2].map((c) => Math.hypot(affine[c], affine[4 + c], affine[8 + c]));
  return {n, affine, spacing, pred, truth, image, probability, stride: [1, n[0], n[0] * n[1]],
          slope: data.image ? data.image.slope : 1, intercept: data.image ? data.image.intercept : 0};
}

// Each view shows two display axes; both run against the screen (R and A are on the left, A and S at the top).
const PLANES = {
  axial: {fixed: 2, u: 0, v: 1, edges: ["R", "L", "A", "P"]},
  coronal: {fixed: 1, u: 0, v: 2, edges: ["R", "L", "S", "I"]},
  sagittal: {fixed: 0, u: 1, v: 2, edges: ["A", "P", "S", "I"]},
};

function voxelIndex(vol, ijk) {
  return ijk[0] + vol.stride[1] * ijk[1] + vol.stride[2] * ijk[2];
}

// The voxel shown at slice pixel (x, y) of a plane through the cursor.
function pixelToVoxel(vol, plane, cursor, x, y) {
  const p = PLANES[plane], ijk = cursor.slice();
  ijk[p.u] = vol.n[p.u] - 1 - x;
  ijk[p.v] = vol.n[p.v] - 1 - y;
  return ijk;
}

// The slice pixel (x, y) where a voxel is shown in a plane.
function voxelToPixel(vol, plane, ijk) {
  const p = PLANES[plane];
  return [vol.n[p.u] - 1 - ijk[p.u], vol.n[p.v] - 1 - ijk[p.v]];
}

function worldOf(vol, ijk) {
  const a = vol.affine;
  return [0, 1, 2].map((r) => a[4 * r] * ijk[0] + a[4 * r + 1] * ijk[1] + a[4 * r + 2] * ijk[2] + a[4 * r + 3]);
}

function isOblique(vol) {
  for (let r = 0; r < 3; r++) for (let c = 0; c < 3; c++) {
    if (r !== c && Math.abs(vol.affine[4 * r + c]) > 1e-3 * vol.spacing[c]) return true;
  }
  return false;
}
