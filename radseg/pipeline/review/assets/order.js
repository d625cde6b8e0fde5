// radseg review: the cases' default order, shared by the index and the case pages' previous/next links.
"use strict";

// Worst first: lowest Dice over the case's classes first; cases without a Dice last, by name.
function sortedRows(rows) {
  return rows.slice().sort((a, b) => {
    const x = a.worst_dice, y = b.worst_dice;
    if (x !== y) return x === null ? 1 : y === null ? -1 : x - y;
    return a.case_id < b.case_id ? -1 : a.case_id > b.case_id ? 1 : 0;
  });
}
