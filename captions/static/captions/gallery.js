/* The gallery: cards of images still being captioned update themselves (status, caption, alt text),
   all of a page's followed together with one request a round. */
(function () {
  "use strict";
  var ic = window.imgcap;
  var gallery = document.getElementById("gallery");
  if (!ic || !gallery) return;
  var follow = ic.imageWatcher(gallery.dataset.imagesApi);

  // The filters apply as soon as one changes (the Filter button is for pages without JavaScript), and
  // fold behind their "Filters" toggle on narrow screens so that the photos come first.
  var box = document.getElementById("filter-box");
  var filters = box && box.querySelector("form");
  if (filters) {
    var narrow = window.matchMedia("(max-width: 48rem)");
    var fold = function () { box.open = !narrow.matches; };
    fold();
    narrow.addEventListener("change", fold);
    filters.addEventListener("change", function () {
      if (filters.requestSubmit) filters.requestSubmit(); else filters.submit();
    });
  }

  document.querySelectorAll('.card[data-status="pending"], .card[data-status="processing"]')
    .forEach(function (card) {
      follow(card.dataset.image, function (image) {
        if (image === null) { card.remove(); return; }
        card.dataset.status = image.status;
        card.querySelector(".status").replaceWith(ic.statusBadge(image.status));
        var link = card.querySelector(".caption a");
        if (image.caption) {
          link.textContent = ic.sentence(image.caption.text);
          card.querySelector("img").alt = ic.sentence(image.caption.text);
        } else if (image.status === "failed") {
          link.replaceChildren(ic.el("span", { class: "muted", text: "Captioning failed" }));
        }
      });
    });
})();
