/* A full-screen viewer over a grid of photo cards (the gallery, an album, a shared album): a click on a
   card's photo opens it large with its caption; Left/Right (or the buttons, or a swipe) go to the
   previous/next card of the page, F toggles full screen, Escape closes and gives focus back.
   A card's photo link opts in with data-full (the large image's URL); its href stays the no-script
   destination. Built on <dialog> (showModal: focus stays inside, the page behind is inert). */
(function () {
  "use strict";
  if (!document.querySelector("a[data-full]") || typeof HTMLDialogElement === "undefined") return;
  // Read at each opening: the gallery adds cards by itself.
  var links = [];

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text) node.textContent = text;
    return node;
  }

  var dialog = el("dialog", { class: "viewer-dialog", "aria-label": "Photo viewer" });
  var photo = el("img", { class: "viewer-photo", alt: "" });
  var caption = el("p", { class: "viewer-caption", "aria-live": "polite" });
  var where = el("span", { class: "viewer-where muted" });
  var details = el("a", { class: "btn btn-small" }, "Details");
  var prev = el("button", { type: "button", class: "viewer-prev", "aria-label": "Previous photo" }, "‹");
  var next = el("button", { type: "button", class: "viewer-next", "aria-label": "Next photo" }, "›");
  var full = el("button", { type: "button", class: "btn-small", "aria-pressed": "false" }, "Full screen");
  var close = el("button", { type: "button", class: "btn-small viewer-close", "aria-label": "Close" }, "✕");
  var bar = el("div", { class: "viewer-bar" });
  [where, details, full, close].forEach(function (node) { bar.appendChild(node); });
  [bar, prev, photo, next, caption].forEach(function (node) { dialog.appendChild(node); });
  document.body.appendChild(dialog);

  var index = 0;
  var opener = null;

  function cardCaption(link) {
    var card = link.closest(".card");
    var text = card && card.querySelector(".caption");
    return text ? text.textContent.trim() : "";
  }

  function show(i) {
    index = Math.max(0, Math.min(links.length - 1, i));
    var link = links[index];
    photo.src = link.getAttribute("data-full");
    photo.alt = cardCaption(link);
    caption.textContent = cardCaption(link);
    where.textContent = (index + 1) + " of " + links.length;
    var page = link.getAttribute("data-details");
    details.style.display = page ? "" : "none"; // .btn's display would beat the hidden attribute
    if (page) details.href = page;
    prev.disabled = index === 0;
    next.disabled = index === links.length - 1;
  }

  function open(i, from) {
    opener = from;
    show(i);
    dialog.showModal();
    next.disabled ? close.focus() : next.focus();
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-full]");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return; // a new tab
    event.preventDefault();
    links = Array.prototype.slice.call(document.querySelectorAll("a[data-full]"));
    open(links.indexOf(link), link);
  });
  prev.addEventListener("click", function () { show(index - 1); });
  next.addEventListener("click", function () { show(index + 1); });
  close.addEventListener("click", function () { dialog.close(); });
  full.addEventListener("click", toggleFullScreen);
  dialog.addEventListener("close", function () {
    if (document.fullscreenElement) document.exitFullscreen();
    if (opener) opener.closest(".card").querySelector("a:not([tabindex='-1'])").focus();
  });
  dialog.addEventListener("click", function (event) {
    if (event.target === dialog) dialog.close(); // the backdrop
  });
  dialog.addEventListener("keydown", function (event) {
    if (event.key === "ArrowLeft") { show(index - 1); event.preventDefault(); }
    else if (event.key === "ArrowRight") { show(index + 1); event.preventDefault(); }
    else if (event.key === "f" || event.key === "F") { toggleFullScreen(); event.preventDefault(); }
  });
  document.addEventListener("fullscreenchange", function () {
    full.setAttribute("aria-pressed", document.fullscreenElement ? "true" : "false");
  });

  // A swipe left or right on a touch screen.
  var touchX = null;
  dialog.addEventListener("touchstart", function (event) { touchX = event.touches[0].clientX; }, { passive: true });
  dialog.addEventListener("touchend", function (event) {
    if (touchX === null) return;
    var dx = event.changedTouches[0].clientX - touchX;
    touchX = null;
    if (Math.abs(dx) > 50) show(index + (dx < 0 ? 1 : -1));
  });

  function toggleFullScreen() {
    if (!dialog.requestFullscreen) return;
    if (document.fullscreenElement) document.exitFullscreen();
    else dialog.requestFullscreen().catch(function () {});
  }
})();
