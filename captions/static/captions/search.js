/* Search as you type: 250 ms after the last key, ask /api/v1/search/ and show its ranked hits, matches in
   <mark>. The address bar follows the query, so reloading or sharing the page keeps the results. */
(function () {
  "use strict";
  var ic = window.imgcap;
  var form = document.getElementById("search-form");
  if (!ic || !form) return;
  var input = document.getElementById("q");
  var results = document.getElementById("results");
  var status = document.getElementById("search-status");
  var emptyTemplate = document.getElementById("empty-template");
  var DEBOUNCE_MS = 250;
  var timer = null;
  var latest = 0;  // answers to older requests are dropped

  function card(hit) {
    var image = hit.image;
    var alt = ic.sentence(image.best_caption || hit.matched.text);
    var thumb = ic.el("a", { class: "thumb", href: image.urls.page, tabindex: "-1", "aria-hidden": "true" }, [
      ic.el("img", { src: image.urls.thumb, alt: alt, loading: "lazy", width: "320", height: "240" }),
    ]);
    var link = ic.el("a", { href: image.urls.page });
    link.append(ic.snippet(hit.snippet));
    var body = ic.el("div", { class: "body" }, [
      ic.el("p", { class: "caption snippet" }, [link]),
      image.best_caption ? ic.el("p", { class: "muted small", style: "margin:0", text: "Best caption: " + ic.sentence(image.best_caption) }) : null,
      ic.el("div", { class: "meta" }, [
        ic.el("span", { class: "source source-" + hit.matched.source, text: hit.matched.source }),
      ].concat(reasons(hit).map(function (reason) { return ic.el("span", { class: "why", text: reason }); }))),
    ]);
    return ic.el("article", { class: "card" }, [thumb, body]);
  }

  var SAID = { words: "matching words", meaning: "similar meaning", picture: "looks like it" };  // as SearchHit.reasons

  function reasons(hit) {
    return hit.matched_by.filter(function (way) { return SAID[way]; }).map(function (way) { return SAID[way]; })
      .concat(hit.tags.map(function (tag) { return "tag: " + tag; }));
  }

  function describe(data, query) {
    var corrected = data.corrected ? "Showing results for “" + data.corrected + "” (you typed “" + query + "”). " : "";
    return corrected + count(data, query);
  }

  function count(data, query) {
    if (data.capped) {
      return "At least " + data.count + " images match “" + query + "”; the best of the newest matches are shown. " +
        "Add words to narrow the search.";
    }
    return data.count + " image" + (data.count === 1 ? " matches" : "s match") + " “" + query + "”.";
  }

  function noMatch(query) {
    return ic.el("div", { class: "empty" }, [
      ic.el("p", {}, [ic.el("strong", { text: "No photo matches “" + query + "”." })]),
      ic.el("p", { text: "Try other words for what is in the photo, or fewer of them (“dog on a beach” rather than a whole story)." }),
    ]);
  }

  function showEmpty() {
    status.textContent = "";
    results.replaceChildren(emptyTemplate.content.cloneNode(true));
  }

  function render(data, query, append) {
    var grid = append ? results.querySelector(".grid") : ic.el("div", { class: "grid" });
    data.results.forEach(function (hit) { grid.append(card(hit)); });
    var more = results.querySelector(".more");
    if (more) more.remove();
    if (!append) {
      status.textContent = data.count ? describe(data, query) : "";
      results.replaceChildren(data.count ? grid : noMatch(query));
    }
    if (data.next) {
      var button = ic.el("button", { type: "button", class: "more", text: "Show more" });
      button.addEventListener("click", function () {
        button.disabled = true;
        ic.api("GET", data.next).then(function (answer) { if (answer.ok) render(answer.data, query, true); });
      });
      results.append(ic.el("div", { class: "pager" }, [button]));
    }
  }

  function search() {
    var query = input.value.trim();
    var url = new URL(window.location.href);
    if (query) url.searchParams.set("q", query); else url.searchParams.delete("q");
    url.searchParams.delete("page");
    window.history.replaceState(null, "", url);
    document.title = (query ? query + " · " : "") + "Search · imgcap";
    var ticket = ++latest;
    if (!query) { showEmpty(); return; }
    results.setAttribute("aria-busy", "true");
    ic.api("GET", form.dataset.api + "?q=" + encodeURIComponent(query)).then(function (answer) {
      if (ticket !== latest) return;
      results.removeAttribute("aria-busy");
      if (!answer.ok) { status.textContent = "Search failed: " + answer.message; return; }
      render(answer.data, query, false);
    });
  }

  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(search, DEBOUNCE_MS);
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearTimeout(timer);
    search();
  });
  results.addEventListener("click", function (event) {
    var chip = event.target.closest("[data-suggest]");
    if (!chip) return;
    event.preventDefault();
    input.value = chip.dataset.suggest;
    search();
    input.focus();
  });
})();
