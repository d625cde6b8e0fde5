// radseg review: one plane drawn into its canvas, the scan in grey and the masks over it.
"use strict";

const COLOURS = {fp: [255, 48, 48], fn: [48, 144, 255], wrongClass: [255, 220, 0], truthOutline: [255, 255, 255],
                 crosshair: "rgba(255, 255, 0, 0.55)"};
const CLASS_COLOURS = [[0, 0, 0], [46, 204, 64], [255, 133, 27], [177, 13, 201], [57, 204, 204], [255, 65, 180],
                       [1, 255, 112], [240, 18, 190], [127, 219, 255], [133, 20, 75], [61, 153, 112]];

function classColour(c) {
  if (c < CLASS_COLOURS.length) return CLASS_COLOURS[c];
  const h = (c * 137.5) % 360 / 60, x = Math.round(255 * (1 - Math.abs((h % 2) - 1)));
  return [[255, x, 0], [x, 255, 0], [0, 255, x], [0, x, 255], [x, 0, 255], [255, 0, x]][Math.floor(h) % 6];
}

// The slice's labels as a (w * h) array, or null.
function sliceOf(vol, array, plane, cursor) {
  if (!array) return null;
  const p = PLANES[plane], w = vol.n[p.u], h = vol.n[p.v], out = new Uint8Array(w * h);
  const base = cursor[p.fixed] * vol.stride[p.fixed], su = vol.stride[p.u], sv = vol.stride[p.v];
  for (let y = 0; y < h; y++) {
    const row = base + (h - 1 - y) * sv;
    for (let x = 0; x < w; x++) out[y * w + x] = array[row + (w - 1 - x) * su];
  }
  return out;
}

function greyOf(vol, plane, cursor, view) {
  const p = PLANES[plane], w = vol.n[p.u], h = vol.n[p.v], out = new Uint8Array(w * h);
  if (!vol.image) return out;
  const base = cursor[p.fixed] * vol.stride[p.fixed], su = vol.stride[p.u], sv = vol.stride[p.v];
  const low = view.level - view.width / 2, scale = 255 / Math.max(view.width, 1e-6);
  for (let y = 0; y < h; y++) {
    const row = base + (h - 1 - y) * sv;
    for (let x = 0; x < w; x++) {
      const value = vol.image[row + (w - 1 - x) * su] * vol.slope + vol.intercept;
      out[y * w + x] = Math.max(0, Math.min(255, Math.round((value - low) * scale)));
    }
  }
  return out;
}

function onEdge(labels, w, h, x, y) {
  const v = labels[y * w + x];
  return x === 0 || y === 0 || x === w - 1 || y === h - 1 || labels[y * w + x - 1] !== v ||
         labels[y * w + x + 1] !== v || labels[(y - 1) * w + x] !== v || labels[(y + 1) * w + x] !== v;
}

// The colour a pixel gets from the masks in the chosen mode, or null.
function overlayColour(view, pred, truth, w, h, x, y) {
  const q = y * w + x, outline = view.style === "outline";
  const shown = (labels) => labels[q] && view.classes[labels[q]] && (!outline || onEdge(labels, w, h, x, y));
  if (view.mode === "pred" || view.mode === "both") {
    if (view.mode === "both" && truth && truth[q] && view.classes[truth[q]] && onEdge(truth, w, h, x, y)) {
      return COLOURS.truthOutline;
    }
    return shown(pred) ? classColour(pred[q]) : null;
  }
  if (view.mode === "truth") return truth && shown(truth) ? classColour(truth[q]) : null;
  if (view.mode !== "disagreement" || !truth || pred[q] === truth[q]) return null;
  const kind = !truth[q] ? "fp" : !pred[q] ? "fn" : "wrongClass";
  if (!view.classes[kind === "fn" ? truth[q] : pred[q]]) return null;
  if (outline && !onEdge(view.errorSlice, w, h, x, y)) return null;
  return COLOURS[kind];
}

function drawPlane(canvas, vol, plane, cursor, view) {
  const p = PLANES[plane], w = vol.n[p.u], h = vol.n[p.v];
  const grey = greyOf(vol, plane, cursor, view);
  const pred = sliceOf(vol, vol.pred, plane, cursor), truth = sliceOf(vol, vol.truth, plane, cursor);
  const heat = view.probability ? sliceOf(vol, vol.probability, plane, cursor) : null;
  if (view.mode === "disagreement" && truth) view.errorSlice = pred.map((v, q) => (v !== truth[q] ? 1 : 0));
  const pixels = new ImageData(w, h), data = pixels.data, alpha = view.opacity;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const q = y * w + x;
    let rgb = [grey[q], grey[q], grey[q]];
    const colour = view.mode === "none" ? null : overlayColour(view, pred, truth, w, h, x, y);
    if (colour) rgb = rgb.map((g, c) => g + alpha * (colour[c] - g));
    if (heat && heat[q] > 12) {
      const a = alpha * heat[q] / 255, hot = [255, heat[q], 0];
      rgb = rgb.map((g, c) => g + a * (hot[c] - g));
    }
    data.set([Math.round(rgb[0]), Math.round(rgb[1]), Math.round(rgb[2]), 255], 4 * q);
  }
  const slice = document.createElement("canvas");
  slice.width = w; slice.height = h;
  slice.getContext("2d").putImageData(pixels, 0, 0);
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.drawImage(slice, 0, 0, canvas.width, canvas.height);
  drawCrosshair(context, canvas, vol, plane, cursor);
}

function drawCrosshair(context, canvas, vol, plane, cursor) {
  const p = PLANES[plane], [x, y] = voxelToPixel(vol, plane, cursor);
  const sx = canvas.width / vol.n[p.u], sy = canvas.height / vol.n[p.v];
  context.strokeStyle = COLOURS.crosshair;
  context.lineWidth = 1;
  context.beginPath();
  context.moveTo(Math.round((x + 0.5) * sx) + 0.5, 0); context.lineTo(Math.round((x + 0.5) * sx) + 0.5, canvas.height);
  context.moveTo(0, Math.round((y + 0.5) * sy) + 0.5); context.lineTo(canvas.width, Math.round((y + 0.5) * sy) + 0.5);
  context.stroke();
}

// Canvas size for a plane: the voxels' physical aspect, fitted into a box of side `box` pixels, or
// larger where that would give a voxel less than a pixel (every voxel can be pointed at).
function canvasSize(vol, plane, box) {
  const p = PLANES[plane], width = vol.n[p.u] * vol.spacing[p.u], height = vol.n[p.v] * vol.spacing[p.v];
  const scale = Math.max(box / Math.max(width, height), 1 / vol.spacing[p.u], 1 / vol.spacing[p.v]);
  return [Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale))];
}
