/* The batch page: progress bar, counts and each row's status follow the worker; a row that finishes gets
   its caption (or the reason it failed) without a reload. A batch can still grow while the files of a
   drop arrive one by one, so the page keeps looking for QUIET_MS after nothing changed, done or not,
   and reloads when new items or rejections appear (its rows are rendered by the server). */
(function () {
  "use strict";
  var ic = window.imgcap;
  var root = document.getElementById("batch");
  if (!ic || !root) return;
  var QUIET_MS = 30000;
  var known = {};  // image id -> last status shown
  var rows = root.querySelectorAll("tr[data-image]");
  rows.forEach(function (row) { known[row.dataset.image] = row.dataset.status; });
  var shown = { items: rows.length, rejected: Number(root.dataset.rejected || 0) };
  var lastChange = Date.now();
  var lastSeen = "";

  function fillRow(row, image) {
    var cell = row.querySelector(".caption-cell");
    if (image.caption) {
      cell.replaceChildren(ic.el("a", { href: image.urls.page, text: ic.sentence(image.caption.text) }));
      row.querySelector("img").alt = ic.sentence(image.caption.text);
    } else if (image.status === "failed") {
      cell.replaceChildren(ic.el("span", { class: "reason", text: image.error || "failed" }));
    }
  }

  /* The captions (or reasons) of rows that just finished, read together. */
  function fillFinished(ids) {
    if (!ids.length) return;
    ic.imagesById(root.dataset.imagesApi, ids).then(function (images) {
      (images || []).forEach(function (image) {
        var row = root.querySelector('tr[data-image="' + image.id + '"]');
        if (row) fillRow(row, image);
      });
    });
  }

  function update(batch) {
    if (batch.items.length > shown.items || (batch.rejected || []).length > shown.rejected) {
      window.location.reload();
      return;
    }
    var seen = JSON.stringify(batch.counts);
    if (seen !== lastSeen) { lastSeen = seen; lastChange = Date.now(); }
    var total = 0;
    Object.keys(batch.counts).forEach(function (name) {
      total += batch.counts[name];
      var node = root.querySelector('[data-count="' + name + '"]');
      if (node) node.textContent = batch.counts[name];
    });
    var finished = batch.counts.done + batch.counts.failed;
    root.querySelector("#batch-finished").textContent = finished;
    var bar = root.querySelector("#batch-progress");
    bar.setAttribute("aria-valuenow", finished);
    bar.firstElementChild.style.width = (total ? Math.round(100 * finished / total) : 100) + "%";
    root.querySelector("#batch-status").replaceWith(Object.assign(ic.statusBadge(batch.status), { id: "batch-status" }));
    var justFinished = [];
    batch.items.forEach(function (item) {
      var row = root.querySelector('tr[data-image="' + item.id + '"]');
      if (!row || known[item.id] === item.status) return;
      known[item.id] = item.status;
      row.dataset.status = item.status;
      row.querySelector(".status").replaceWith(ic.statusBadge(item.status));
      if (ic.FINAL[item.status]) justFinished.push(item.id);
    });
    fillFinished(justFinished);
    if (batch.status === "done") {
      var live = root.querySelector("#batch-live");
      if (live) live.textContent = "All images are finished.";
    }
  }

  ic.watch(root.dataset.api, function (batch) { if (batch) update(batch); },
           function (batch) { return batch.status === "done" && Date.now() - lastChange > QUIET_MS; });
})();
