/* The gallery's selection: counts the ticked cards, shows the actions only while some are ticked,
   "Select all on this page", and asks before a delete (the server asks too, for pages without
   JavaScript; with it, the confirmation page is skipped only when this dialog said yes). */
(function () {
  "use strict";
  var form = document.getElementById("bulk-form");
  if (!form) return;
  var count = document.getElementById("bulk-count");
  var actions = form.querySelector(".bulk-actions");
  var all = document.getElementById("select-all");
  var idle = count.textContent;

  function boxes() {
    return Array.prototype.slice.call(document.querySelectorAll('input[name="ids"][form="bulk-form"]'));
  }

  function update() {
    var ticked = boxes().filter(function (box) { return box.checked; }).length;
    count.textContent = ticked ? ticked + " selected" : idle;
    form.classList.toggle("has-selection", ticked > 0);
    actions.querySelectorAll("button[type=submit], select, input").forEach(function (node) {
      node.disabled = !ticked;
    });
    boxes().forEach(function (box) { box.closest(".card").classList.toggle("selected", box.checked); });
    all.textContent = ticked && ticked === boxes().length ? "Select none" : "Select all on this page";
  }

  form.classList.add("js");
  all.hidden = false;
  all.addEventListener("click", function () {
    var every = boxes();
    var on = !every.every(function (box) { return box.checked; });
    every.forEach(function (box) { box.checked = on; });
    update();
  });
  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches('input[name="ids"]')) update();
  });
  // Cards the gallery adds by itself (new uploads) bring their own checkbox.
  var grid = document.getElementById("gallery-grid");
  if (grid) new MutationObserver(update).observe(grid, { childList: true });

  form.addEventListener("submit", function (event) {
    var button = event.submitter;
    if (!button || button.value !== "delete") return;
    var ticked = boxes().filter(function (box) { return box.checked; }).length;
    if (!window.confirm("Delete " + ticked + " photo" + (ticked === 1 ? "" : "s") + " and their captions for good?")) {
      event.preventDefault();
      return;
    }
    var sure = document.createElement("input");
    sure.type = "hidden"; sure.name = "confirm"; sure.value = "1";
    form.appendChild(sure);
  });
  update();
})();
