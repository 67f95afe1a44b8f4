// Search, filters, sorting and pages for the trajectory table. Reads only the table's own
// data-* attributes and writes only textContent, hidden and row order: no HTML is built here.
(function () {
  "use strict";
  var PAGE_SIZE = 50;
  var table = document.getElementById("trajectories");
  if (!table) { return; }
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var search = document.getElementById("q");
  var status = document.getElementById("f-status");
  var correct = document.getElementById("f-correct");
  var tool = document.getElementById("f-tool");
  var turns = document.getElementById("f-turns");
  var shown = document.getElementById("shown");
  var prev = document.getElementById("prev");
  var next = document.getElementById("next");
  var page = 0;

  function keep(row, needle, minTurns) {
    var d = row.dataset;
    if (status.value && d.status !== status.value) { return false; }
    if (correct.value && d.correct !== correct.value) { return false; }
    if (tool.value === "-" && d.tools !== "") { return false; }
    if (tool.value && tool.value !== "-" && d.tools.split(" ").indexOf(tool.value) < 0) { return false; }
    if (Number(d.turns) < minTurns) { return false; }
    return !needle || d.search.indexOf(needle) >= 0;
  }

  function update(resetPage) {
    var needle = search.value.trim().toLowerCase();
    var minTurns = Number(turns.value) || 0;
    var matching = rows.filter(function (row) { return keep(row, needle, minTurns); });
    var pages = Math.max(1, Math.ceil(matching.length / PAGE_SIZE));
    if (resetPage) { page = 0; }
    page = Math.min(page, pages - 1);
    rows.forEach(function (row) { row.hidden = true; });
    var first = page * PAGE_SIZE;
    matching.slice(first, first + PAGE_SIZE).forEach(function (row) { row.hidden = false; });
    shown.textContent = matching.length === 0 ? "no matching trajectories"
      : (first + 1) + "–" + Math.min(first + PAGE_SIZE, matching.length) + " of " + matching.length
        + " matching (page " + (page + 1) + "/" + pages + ")";
    prev.disabled = page === 0;
    next.disabled = page >= pages - 1;
  }

  function sortBy(header) {
    var index = Array.prototype.indexOf.call(header.parentNode.cells, header);
    var numeric = header.dataset.sort === "num";
    var descending = header.dataset.order !== "desc";
    header.dataset.order = descending ? "desc" : "asc";
    rows.sort(function (a, b) {
      var x = numeric ? Number(a.cells[index].dataset.value) : a.cells[index].textContent;
      var y = numeric ? Number(b.cells[index].dataset.value) : b.cells[index].textContent;
      var order = x < y ? -1 : x > y ? 1 : 0;
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    update(true);
  }

  [search, turns].forEach(function (el) { el.addEventListener("input", function () { update(true); }); });
  [status, correct, tool].forEach(function (el) { el.addEventListener("change", function () { update(true); }); });
  prev.addEventListener("click", function () { page -= 1; update(false); });
  next.addEventListener("click", function () { page += 1; update(false); });
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header) {
    if (header.dataset.sort) {
      header.style.cursor = "pointer";
      header.title = "sort";
      header.addEventListener("click", function () { sortBy(header); });
    }
  });
  update(true);
}());
