// radseg review: the case page. Loads cases/<name>.js (named after the '#'), then wires the views.
"use strict";

const PRESETS = {CT: {abdomen: [40, 400], liver: [60, 150], lung: [-600, 1500], bone: [400, 1800]}};
const VIEW_BOX = 400;
const state = {vol: null, data: null, cursor: [0, 0, 0], active: "axial", errorIndex: -1,
               view: {level: 40, width: 400, mode: "pred", style: "fill", opacity: 0.5, probability: false, classes: {}}};
const $ = (id) => document.getElementById(id);

function loadCase() {
  const name = decodeURIComponent(location.hash.slice(1));
  if (!name) { $("title").textContent = "no case named in the address (case.html#NAME)"; return; }
  const script = document.createElement("script");
  script.src = "cases/" + encodeURIComponent(name) + ".js";
  script.onload = () => start(window.RADSEG_CASE, name).catch(fail);
  script.onerror = () => fail(new Error("cannot load " + script.src));
  document.body.appendChild(script);
}

function fail(error) {
  $("title").textContent = "error: " + error.message;
  document.body.dataset.error = error.message;
}

async function start(data, name) {
  state.data = data;
  performance.mark("radseg-case-script-loaded");
  state.vol = await decodeCase(data);
  performance.mark("radseg-decoded");
  state.cursor = state.vol.n.map((n) => Math.floor(n / 2));
  if (data.errors.length) state.cursor = data.errors[0].voxel.slice();
  setupHeader(data, name);
  setupWindow(data);
  setupOverlays(data);
  setupViews();
  drawAll();
  document.title = "radseg review: " + data.case_id;
  document.body.dataset.ready = "1";
  window.radsegReadyMs = performance.now();
}

function setupHeader(data, name) {
  $("title").textContent = data.case_id;
  const present = presentClasses(data).sort(([, a], [, b]) => (a.dice ?? 2) - (b.dice ?? 2));
  const shown = present.slice(0, 4).map(([cls, s]) => (data.truth
    ? `${cls}: Dice ${fmt(s.dice)}, HD95 ${fmt(s.hd95_mm)} mm, ${fmt(s.volume_pred_ml)} / ${fmt(s.volume_true_ml)} mL`
    : `${cls}: ${fmt(s.volume_pred_ml)} mL predicted`));
  if (present.length > 4) shown.push(`${present.length - 4} more classes`);
  $("scores").textContent = shown.join(" · ");
  const rows = window.RADSEG_INDEX ? sortedRows(window.RADSEG_INDEX.rows) : [];
  const at = rows.findIndex((row) => row.page === name);
  for (const [id, step] of [["previous", -1], ["next", 1]]) {
    const other = rows[at + step];
    $(id).hidden = at < 0 || !other;
    if (other) $(id).href = "case.html#" + encodeURIComponent(other.page);
  }
  window.addEventListener("hashchange", () => location.reload());
  const notes = [`source grid ${data.source_shape.join("×")} voxels, ${data.source_spacing.map((s) => s.toFixed(3)).join(" × ")} mm, stored ${data.orientation}; shown turned to the nearest RAS axes (no resampling)`];
  if (data.step > 1) notes.push(`downsampled for display: every ${data.step}th voxel along each axis (${data.shape.join("×")} shown); scores use every voxel`);
  if (isOblique(state.vol)) notes.push("oblique scan: shown in its own voxel grid; the mm read-out uses the exact affine");
  if (!data.image) notes.push("no scan found for this case: masks on a black background");
  $("notes").innerHTML = notes.map((n) => `<li>${n}</li>`).join("");
}

// [name, scores] of the classes in the prediction or the truth of this case
function presentClasses(data) {
  return Object.entries(data.scores).filter(([, s]) => s.volume_pred_ml || s.volume_true_ml);
}

function setupWindow(data) {
  const modality = data.image ? data.image.modality : "MR";
  const presets = Object.assign({}, modality === "CT" ? PRESETS.CT : {});
  if (data.image) {
    const [lo, hi] = data.image.auto_window;
    presets["auto (1st–99th percentile)"] = [(lo + hi) / 2, Math.max(hi - lo, 1)];
  }
  presets.manual = null;
  $("preset").innerHTML = Object.keys(presets).map((k) => `<option>${k}</option>`).join("");
  const choose = (name) => {
    if (presets[name]) [state.view.level, state.view.width] = presets[name];
    $("level").value = state.view.level; $("width").value = state.view.width;
  };
  $("preset").onchange = () => { choose($("preset").value); drawAll(); };
  for (const id of ["level", "width"]) {
    $(id).oninput = () => { state.view[id] = Number($(id).value); $("preset").value = "manual"; drawAll(); };
  }
  choose($("preset").value);
}

function setupOverlays(data) {
  const hasTruth = Boolean(data.truth);
  if (hasTruth) state.view.mode = "both";
  for (const option of $("mode").options) option.disabled = !hasTruth && option.value !== "pred" && option.value !== "none";
  $("mode").value = state.view.mode;
  $("next-error").hidden = !hasTruth;
  $("probability-toggle").hidden = !data.probability;
  for (const id of ["mode", "style", "opacity", "probability"]) {
    $(id).oninput = $(id).onchange = () => {
      state.view[id] = id === "opacity" ? Number($(id).value) : id === "probability" ? $(id).checked : $(id).value;
      drawAll();
    };
  }
  const present = new Set(presentClasses(data).map(([name]) => name));
  const classes = Object.entries(data.labels).filter(([k, name]) => k !== "0" && present.has(name));
  $("classes").open = classes.length <= 8;
  $("classes").querySelector("summary").textContent = `classes in this case (${classes.length})`;
  $("class-list").innerHTML = classes.map(([k, name]) => `<label><input type="checkbox" data-class="${k}" checked>` +
    `<i style="background:rgb(${classColour(Number(k))})"></i>${escapeHtml(name)}</label>`).join("");
  for (const k of Object.keys(data.labels)) state.view.classes[k] = true;
  for (const box of $("classes").querySelectorAll("input")) {
    state.view.classes[box.dataset.class] = true;
    box.onchange = () => { state.view.classes[box.dataset.class] = box.checked; drawAll(); };
  }
  $("next-error").onclick = nextError;
  $("legend").innerHTML = [["fp", "false positive (disagreement mode)"], ["fn", "false negative"],
    ["wrongClass", "wrong class"], ["truthOutline", "truth outline (prediction + truth)"]]
    .map(([k, text]) => `<span><i style="background:rgb(${COLOURS[k]})"></i>${text}</span>`).join("");
}

function setupViews() {
  for (const element of document.querySelectorAll(".view")) {
    const plane = element.dataset.plane, canvas = element.querySelector("canvas");
    [canvas.width, canvas.height] = canvasSize(state.vol, plane, VIEW_BOX);
    PLANES[plane].edges.forEach((letter, e) => { element.querySelectorAll(".edge")[e].textContent = letter; });
    canvas.addEventListener("mousemove", (event) => { state.active = plane; showReadout(plane, canvas, event); });
    canvas.addEventListener("click", (event) => {
      state.cursor = voxelAt(plane, canvas, event);
      drawAll();
      showReadout(plane, canvas, event);
    });
    canvas.addEventListener("wheel", (event) => { event.preventDefault(); scroll(plane, Math.sign(event.deltaY)); },
                            {passive: false});
  }
  document.addEventListener("keydown", (event) => {
    const step = {ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1}[event.key];
    if (step && !(event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement)) {
      event.preventDefault();
      scroll(state.active, step);
    }
  });
}

function scroll(plane, step) {
  const axis = PLANES[plane].fixed;
  state.cursor[axis] = Math.max(0, Math.min(state.vol.n[axis] - 1, state.cursor[axis] + step));
  drawAll();
}

function voxelAt(plane, canvas, event) {
  // the voxel drawn at the pixel under the pointer: drawImage samples each pixel at its centre
  const p = PLANES[plane], box = canvas.getBoundingClientRect();
  const x = Math.floor((Math.floor(event.clientX - box.left) + 0.5) / box.width * state.vol.n[p.u]);
  const y = Math.floor((Math.floor(event.clientY - box.top) + 0.5) / box.height * state.vol.n[p.v]);
  const clamp = (v, n) => Math.max(0, Math.min(n - 1, v));
  return pixelToVoxel(state.vol, plane, state.cursor, clamp(x, state.vol.n[p.u]), clamp(y, state.vol.n[p.v]));
}

function showReadout(plane, canvas, event) {
  const vol = state.vol, ijk = voxelAt(plane, canvas, event), q = voxelIndex(vol, ijk), labels = state.data.labels;
  const world = worldOf(vol, ijk), m = state.data.world_to_source;
  const source = [0, 1, 2].map((r) => Math.round(m[4 * r] * world[0] + m[4 * r + 1] * world[1] + m[4 * r + 2] * world[2] + m[4 * r + 3]));
  const value = vol.image ? vol.image[q] * vol.slope + vol.intercept : null;
  const parts = [`voxel (${source.join(", ")}) of the file`,
    `RAS (${world.map((v) => v.toFixed(1)).join(", ")}) mm`, `LPS (${[-world[0], -world[1], world[2]].map((v) => v.toFixed(1)).join(", ")}) mm`,
    value === null ? "no scan" : `value ${Number.isInteger(value) ? value : value.toPrecision(4)}`,
    `prediction ${labels[vol.pred[q]] || vol.pred[q]}`];
  if (vol.truth) parts.push(`truth ${labels[vol.truth[q]] || vol.truth[q]}`);
  if (vol.probability) parts.push(`p ${(vol.probability[q] / 255).toFixed(2)}`);
  $("readout").textContent = parts.join(" · ");
  Object.assign($("readout").dataset, {voxel: source.join(","), world: world.join(","), value: value === null ? "" : value});
}

function nextError() {
  const errors = state.data.errors;
  if (!errors.length) { $("error-status").textContent = "no disagreement"; return; }
  state.errorIndex = (state.errorIndex + 1) % errors.length;
  const error = errors[state.errorIndex];
  state.cursor = error.voxel.slice();
  const of = state.data.error_count > errors.length ? `the ${errors.length} largest of ${state.data.error_count}` : errors.length;
  $("error-status").textContent = `error ${state.errorIndex + 1} of ${of}: ${error.kind}, ` +
    `${fmt(error.volume_ml)} mL (${error.voxels} voxels)`;
  document.body.dataset.errorTarget = error.voxel.join(",");
  drawAll();
}

function drawAll() {
  for (const element of document.querySelectorAll(".view")) {
    drawPlane(element.querySelector("canvas"), state.vol, element.dataset.plane, state.cursor, state.view);
  }
  document.body.dataset.cursor = state.cursor.join(",");
}

function fmt(value) {
  return value === null || value === undefined ? "–" : Math.abs(value) >= 100 ? value.toFixed(0) : value.toFixed(3);
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

// For tests and scripts: the canvas pixel at the centre of a voxel in a plane.
window.radseg = {state, voxelToCanvas(plane, ijk) {
  const p = PLANES[plane], canvas = document.querySelector(`.view[data-plane=${plane}] canvas`);
  const [x, y] = voxelToPixel(state.vol, plane, ijk);
  return [(x + 0.5) * canvas.width / state.vol.n[p.u], (y + 0.5) * canvas.height / state.vol.n[p.v]];
}};

loadCase();
