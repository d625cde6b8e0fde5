// radseg review: the index, one row per case, sortable, worst first.
"use strict";

const INDEX = window.RADSEG_INDEX;
const METRICS = INDEX.has_truth
  ? [["dice", "Dice"], ["hd95_mm", "HD95 mm"], ["volume_pred_ml", "vol. pred"], ["volume_true_ml", "vol. true"],
     ["lesions_pred", "lesions pred"], ["lesions_true", "lesions true"]]
  : [["volume_pred_ml", "vol. pred"], ["lesions_pred", "lesions pred"]];
// classes present in some case (predicted or true); with more than ALL_CLASSES of them, one class at a time
const ALL_CLASSES = 4;
const PRESENT = Object.entries(INDEX.labels).filter(([k]) => k !== "0").map(([, name]) => name).filter((name) =>
  INDEX.rows.some((r) => r.scores[name].volume_pred_ml || r.scores[name].volume_true_ml));
let COLUMNS = [];

function buildColumns(choice) {
  COLUMNS = [{title: "case", key: (r) => r.case_id, left: true}];
  if (INDEX.has_truth) {
    COLUMNS.push({title: "worst Dice", key: (r) => r.worst_dice, score: true});
    if (PRESENT.length > 1) COLUMNS.push({title: "worst class", key: (r) => r.worst_class, left: true});
  }
  for (const name of choice === "" ? PRESENT : [choice]) {
    for (const [metric, title] of METRICS) {
      COLUMNS.push({title: `${name} ${title}`, key: (r) => r.scores[name][metric], score: metric === "dice",
                    count: metric.startsWith("lesions")});
    }
  }
  COLUMNS.push({title: "error regions", key: (r) => (INDEX.has_truth ? r.errors : null), count: true});
}

function setupClassChoice() {
  const select = document.getElementById("class-choice");
  const options = (PRESENT.length <= ALL_CLASSES ? [["", "all classes"]] : []).concat(PRESENT.map((n) => [n, n]));
  select.innerHTML = options.map(([v, text]) => `<option value="${escapeHtml(v)}">${escapeHtml(text)}</option>`).join("");
  select.onchange = () => { buildColumns(select.value); sortColumn = null; render(); };
  buildColumns(select.value);
}
let sortColumn = null, ascending = true;

function cell(column, row) {
  const value = column.key(row);
  if (column.left) return `<td class="l">${value === null ? "–" : escapeHtml(value)}</td>`;
  const shade = column.score && value !== null ? (value < 0.5 ? "bad" : value < 0.8 ? "mid" : "") : "";
  const text = value === null || value === undefined ? "–" : column.count ? value : value.toFixed(3);
  return `<td class="${shade}">${text}</td>`;
}

function render() {
  let rows = sortedRows(INDEX.rows);
  if (sortColumn !== null) {
    const key = COLUMNS[sortColumn].key;
    rows = rows.sort((a, b) => {
      const x = key(a), y = key(b);
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * (ascending ? 1 : -1);
    });
  }
  document.querySelector("#cases thead").innerHTML = "<tr>" + COLUMNS.map((c, n) =>
    `<th class="${c.left ? "l " : ""}${n === sortColumn ? (ascending ? "sorted-asc" : "sorted-desc") : ""}" data-column="${n}">${escapeHtml(c.title)}</th>`).join("") + "</tr>";
  document.querySelector("#cases tbody").innerHTML = rows.map((row) =>
    `<tr data-page="${escapeHtml(row.page)}">${COLUMNS.map((c) => cell(c, row)).join("")}</tr>`).join("");
  for (const th of document.querySelectorAll("#cases th")) {
    th.onclick = () => {
      const n = Number(th.dataset.column);
      ascending = n === sortColumn ? !ascending : true;
      sortColumn = n;
      render();
    };
  }
  for (const tr of document.querySelectorAll("#cases tbody tr")) {
    tr.onclick = () => { location.href = "case.html#" + encodeURIComponent(tr.dataset.page); };
  }
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const downsampled = INDEX.rows.filter((r) => r.step > 1).length;
document.getElementById("summary").textContent = `${INDEX.rows.length} case(s), ` +
  (INDEX.has_truth ? "worst first (lowest Dice over the classes)" : "predictions only (no truth: volumes and counts)") +
  (downsampled ? `; ${downsampled} large case(s) shown downsampled in the viewer (display only)` : "");
document.getElementById("notes").innerHTML = INDEX.notes.map((n) => `<li>${escapeHtml(n)}</li>`).join("");
setupClassChoice();
render();
document.body.dataset.ready = "1";
