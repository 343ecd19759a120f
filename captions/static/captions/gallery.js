/* The gallery: cards of images still being captioned update themselves (status, caption, alt text),
   all of a page's followed together with one request a round; the first page picks up new images by
   itself (every REFRESH_MS while the tab is visible, one request with the page's filters) and puts
   their cards on top, without a reload. */
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

  var REFRESH_MS = 10000;

  function reviewBadge() {
    return ic.el("span", { class: "review", title: "The model is probably wrong about this caption",
                           text: "needs review" });
  }

  /* A card still being captioned follows its image until it is done or failed. */
  function followCard(card) {
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
      if (image.needs_review && !card.querySelector(".review")) {
        card.dataset.review = "1";
        card.querySelector(".meta .status").after(reviewBadge());
      }
    });
  }

  document.querySelectorAll('.card[data-status="pending"], .card[data-status="processing"]').forEach(followCard);

  /* The card _card.html renders, for an image of the API. */
  function card(image) {
    var text = image.caption ? ic.sentence(image.caption.text) : "";
    var thumb = ic.el("a", { class: "thumb", href: image.urls.page, tabindex: "-1", "aria-hidden": "true",
                             "data-full": image.urls.thumb + "?size=1600", "data-details": image.urls.page }, [
      ic.el("img", { src: image.urls.thumb, srcset: image.urls.thumb + " 1x, " + image.urls.thumb + "?size=640 2x",
                     alt: text || image.original_name, loading: "lazy", width: "320", height: "240" }),
    ]);
    var waiting = image.status === "failed" ? "Captioning failed" : "Captioning…";
    var link = ic.el("a", { href: image.urls.page }, [text || ic.el("span", { class: "muted", text: waiting })]);
    var meta = ic.el("div", { class: "meta" }, [
      ic.statusBadge(image.status),
      image.needs_review ? reviewBadge() : null,
      ic.el("span", { text: image.visibility }),
      ic.el("span", { text: "· " + image.owner }),
    ]);
    // One of the user's own, on a page with the selection bar: it can be selected too.
    var select = null;
    if (document.getElementById("bulk-form") && image.owner === gallery.dataset.me) {
      select = ic.el("label", { class: "select-box" }, [
        ic.el("input", { type: "checkbox", name: "ids", value: String(image.id), form: "bulk-form" }),
        ic.el("span", { class: "visually-hidden", text: "Select " + (text || image.original_name) }),
      ]);
    }
    var node = ic.el("article", { class: "card", "data-image": String(image.id), "data-status": image.status,
                                  "data-review": image.needs_review ? "1" : null }, [
      thumb, select, ic.el("div", { class: "body" }, [ic.el("p", { class: "caption" }, [link]), meta]),
    ]);
    if (!ic.FINAL[image.status]) followCard(node);
    return node;
  }

  /* The page's filters as the API's: the form holds the values the server applied. */
  function apiQuery() {
    var params = new URLSearchParams({ page_size: gallery.dataset.pageSize || "24" });
    var value = function (name) {
      var field = filters && filters.elements[name];
      return field ? (field.type === "checkbox" ? (field.checked ? "1" : "") : field.value.trim()) : "";
    };
    if (value("show") === "mine") params.set("mine", "true");
    if (value("show") === "public") params.set("visibility", "public");
    ["status", "batch", "tag"].forEach(function (name) { if (value(name)) params.set(name, value(name)); });
    if (value("review")) params.set("needs_review", "true");
    return gallery.dataset.imagesApi + "?" + params.toString();
  }

  function newestShown() {
    var newest = 0;
    document.querySelectorAll(".card[data-image]").forEach(function (node) {
      newest = Math.max(newest, Number(node.dataset.image));
    });
    return newest;
  }

  function showNew(data) {
    var since = newestShown();
    var fresh = data.results.filter(function (image) { return image.id > since; });  // ids grow with time
    document.getElementById("gallery-total").textContent = data.count + " image" + (data.count === 1 ? "" : "s");
    if (!fresh.length) return;
    var grid = document.getElementById("gallery-grid");
    if (!grid) {  // the page said there was nothing yet
      grid = ic.el("div", { class: "grid", id: "gallery-grid" });
      var empty = document.querySelector("main .empty");
      if (empty) empty.replaceWith(grid); else gallery.parentNode.append(grid);
    }
    grid.prepend.apply(grid, fresh.map(card));
    document.getElementById("gallery-news").textContent =
      fresh.length + " new image" + (fresh.length === 1 ? "" : "s") + " at the top.";
  }

  var page = new URLSearchParams(window.location.search).get("page");
  var newestFirst = (gallery.dataset.sort || "-added") === "-added";
  if ((!page || page === "1") && newestFirst) {  // new images land on the first page of this order
    var busy = false;
    var refresh = function () {
      if (busy || document.visibilityState !== "visible") return;
      busy = true;
      ic.api("GET", apiQuery()).then(function (answer) {
        busy = false;
        if (answer.ok) showNew(answer.data);
      });
    };
    setInterval(refresh, REFRESH_MS);
    document.addEventListener("visibilitychange", refresh);  // at once when the tab is back
  }
})();
