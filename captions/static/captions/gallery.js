/* The gallery: cards of images still being captioned update themselves (status, caption, alt text). */
(function () {
  "use strict";
  var ic = window.imgcap;
  if (!ic) return;
  var MAX_WATCHED = 24;  // one page of cards; each is polled on its own, slower and slower

  document.querySelectorAll('.card[data-status="pending"], .card[data-status="processing"]')
    .forEach(function (card, index) {
      if (index >= MAX_WATCHED) return;
      ic.watch(card.dataset.api, function (image) {
        if (image === null) { card.remove(); return; }
        card.dataset.status = image.status;
        card.querySelector(".status").replaceWith(ic.statusBadge(image.status));
        var link = card.querySelector(".caption a");
        if (image.caption) {
          link.textContent = image.caption.text;
          card.querySelector("img").alt = image.caption.text;
        } else if (image.status === "failed") {
          link.replaceChildren(ic.el("span", { class: "muted", text: "Captioning failed" }));
        }
      });
    });
})();
