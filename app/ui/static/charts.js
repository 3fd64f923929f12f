// The console's charts: each is drawn from the HTML table beside it (the numbers are the
// table's, so a page without JavaScript, or a screen reader, has the same data), with the
// vendored Chart.js. Labels are drawn as canvas text, never parsed as HTML.
//
// <table data-chart="bar|line|histogram|interval" data-y-label="…" data-limit="0.2"
//        data-limit-label="…" data-limit2="…" data-limit2-label="…">
//   <thead><tr><th>label</th><th data-series>series A</th>…</tr></thead>
//   <tbody><tr><th>row label</th><td data-value="0.31">…</td>…</tr></tbody>
// </table>
// A column without `data-series` is shown in the table only. In an "interval" chart the
// columns are effect, lower bound, upper bound (the band between the bounds is shaded).
(function () {
  "use strict";
  var PALETTE = ["#0b5cad", "#c2410c", "#15803d", "#7e22ce", "#be123c", "#0e7490", "#a16207", "#4d7c0f"];
  var LIMIT = ["#a40e26", "#b45309"];

  function number(cell) {
    var raw = cell ? cell.getAttribute("data-value") : null;
    if (raw === null || raw === "") { return null; }
    var value = Number(raw);
    return isFinite(value) ? value : null;
  }

  function read(table) {
    var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var columns = [];
    heads.forEach(function (th, index) {
      if (index > 0 && th.hasAttribute("data-series")) { columns.push({ index: index, name: th.textContent.trim() }); }
    });
    var labels = [];
    var series = columns.map(function (c) { return { name: c.name, values: [] }; });
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      labels.push(row.cells[0].textContent.trim());
      columns.forEach(function (c, i) { series[i].values.push(number(row.cells[c.index])); });
    });
    return { labels: labels, series: series };
  }

  function limits(table, length) {
    var found = [];
    ["", "2"].forEach(function (suffix, i) {
      var raw = table.getAttribute("data-limit" + suffix);
      if (raw === null || raw === "" || !isFinite(Number(raw))) { return; }
      var value = Number(raw);
      found.push({
        type: "line", label: table.getAttribute("data-limit" + suffix + "-label") || "limit",
        data: new Array(length).fill(value), borderColor: LIMIT[i], borderDash: [6, 4],
        borderWidth: 2, pointRadius: 0, fill: false, order: 0
      });
    });
    return found;
  }

  function config(table) {
    var kind = table.getAttribute("data-chart");
    var data = read(table);
    var datasets;
    if (kind === "interval") {
      var effect = data.series[0], low = data.series[1], high = data.series[2];
      datasets = [
        { type: "line", label: low.name, data: low.values, borderColor: "#8c959f", borderWidth: 1, pointRadius: 0, fill: false },
        { type: "line", label: high.name, data: high.values, borderColor: "#8c959f", borderWidth: 1, pointRadius: 0,
          fill: "-1", backgroundColor: "rgba(11, 92, 173, 0.15)" },
        { type: "line", label: effect.name, data: effect.values, borderColor: PALETTE[0], borderWidth: 2, pointRadius: 3, fill: false }
      ];
    } else {
      var chartType = kind === "line" ? "line" : "bar";
      datasets = data.series.map(function (s, i) {
        return { type: chartType, label: s.name, data: s.values, backgroundColor: PALETTE[i % PALETTE.length],
          borderColor: PALETTE[i % PALETTE.length], borderWidth: chartType === "line" ? 2 : 0, pointRadius: 2,
          spanGaps: true, order: 1, barPercentage: kind === "histogram" ? 1.0 : 0.9,
          categoryPercentage: kind === "histogram" ? 0.95 : 0.8 };
      });
    }
    datasets = datasets.concat(limits(table, data.labels.length));
    return {
      type: kind === "line" || kind === "interval" ? "line" : "bar",
      data: { labels: data.labels, datasets: datasets },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: { title: { display: !!table.getAttribute("data-x-label"), text: table.getAttribute("data-x-label") || "" } },
          y: { beginAtZero: kind !== "interval", title: { display: true, text: table.getAttribute("data-y-label") || "" } }
        },
        plugins: { legend: { position: "bottom" } }
      }
    };
  }

  function draw(table) {
    if (table.getAttribute("data-drawn") === "yes" || typeof window.Chart === "undefined") { return; }
    var box = document.createElement("div");
    box.className = "chart-box";
    var canvas = document.createElement("canvas");
    canvas.setAttribute("role", "img");
    var caption = table.caption ? table.caption.textContent.trim() : "chart";
    canvas.setAttribute("aria-label", caption + " (chart; the same numbers are in the table that follows)");
    box.appendChild(canvas);
    var holder = table.closest("details") || table;
    holder.parentNode.insertBefore(box, holder);
    new window.Chart(canvas, config(table));
    table.setAttribute("data-drawn", "yes");
    if (holder.tagName === "DETAILS") { holder.removeAttribute("open"); }
  }

  function drawAll(root) {
    Array.prototype.forEach.call((root || document).querySelectorAll("table[data-chart]"), draw);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  } else {
    drawAll(document);
  }
  // content htmx swapped in (the scores section loads after the model page): draw what is new
  document.addEventListener("htmx:afterSettle", function () { drawAll(document); });
})();
