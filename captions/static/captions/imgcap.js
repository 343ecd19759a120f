/* imgcap's shared helpers for the page scripts: the REST API with the session cookie, polling, safe DOM.
   Plain browser JavaScript, no build step; everything hangs off window.imgcap. */
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  /* The API's error body is {"error": {"code", "message"}}; anything else gets a plain sentence. */
  function errorMessage(status, data) {
    if (data && data.error && data.error.message) return data.error.message;
    if (status === 0) return "the server could not be reached";
    if (status === 413) return "the file is too large";
    return "the server answered " + status;
  }

  function parseJSON(text) {
    try { return text ? JSON.parse(text) : null; } catch (e) { return null; }
  }

  /* fetch() with the session cookie and CSRF header; resolves to {ok, status, data, message}, never rejects. */
  function api(method, url, body) {
    var headers = { "Accept": "application/json", "X-CSRFToken": csrfToken() };
    var options = { method: method, headers: headers, credentials: "same-origin" };
    if (body instanceof FormData) {
      options.body = body;
    } else if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    return fetch(url, options).then(function (response) {
      return response.text().then(function (text) {
        var data = parseJSON(text);
        return { ok: response.ok, status: response.status, data: data,
                 message: response.ok ? "" : errorMessage(response.status, data) };
      });
    }, function () {
      return { ok: false, status: 0, data: null, message: errorMessage(0, null) };
    });
  }

  /* A multipart POST through XMLHttpRequest, for upload progress: onProgress(fraction 0..1). */
  function upload(url, formData, onProgress) {
    return new Promise(function (resolve) {
      var xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("X-CSRFToken", csrfToken());
      xhr.upload.addEventListener("progress", function (event) {
        if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total);
      });
      xhr.addEventListener("load", function () {
        var data = parseJSON(xhr.responseText);
        var ok = xhr.status >= 200 && xhr.status < 300;
        resolve({ ok: ok, status: xhr.status, data: data, message: ok ? "" : errorMessage(xhr.status, data) });
      });
      xhr.addEventListener("error", function () {
        resolve({ ok: false, status: 0, data: null, message: errorMessage(0, null) });
      });
      xhr.send(formData);
    });
  }

  var FINAL = { done: true, failed: true };

  /* Poll GET url until the image (or batch) is done or failed: onUpdate(data) after every answer.
     Every 1 s at first, slower (up to 5 s) the longer it takes; stops on a final state or a 404. */
  function watch(url, onUpdate, isFinal) {
    var delay = 1000;
    var stopped = false;
    isFinal = isFinal || function (data) { return FINAL[data.status]; };
    function tick() {
      if (stopped) return;
      api("GET", url).then(function (answer) {
        if (stopped) return;
        if (answer.ok) {
          onUpdate(answer.data);
          if (isFinal(answer.data)) return;
        } else if (answer.status === 404) {
          onUpdate(null);
          return;
        }
        delay = Math.min(5000, delay * 1.25);
        setTimeout(tick, delay);
      });
    }
    setTimeout(tick, delay);
    return function stop() { stopped = true; };
  }

  /* The images among `ids` that the user can see, read with GET listUrl?ids=… (the API takes at most
     IDS_PER_REQUEST ids a request): resolves to their list, or null if a request failed. */
  var IDS_PER_REQUEST = 200;

  function imagesById(listUrl, ids) {
    var requests = [];
    for (var i = 0; i < ids.length; i += IDS_PER_REQUEST) {
      var url = listUrl + "?page_size=" + IDS_PER_REQUEST + "&ids=" + ids.slice(i, i + IDS_PER_REQUEST).join(",");
      requests.push(api("GET", url));
    }
    return Promise.all(requests).then(function (answers) {
      if (answers.some(function (answer) { return !answer.ok; })) return null;
      return [].concat.apply([], answers.map(function (answer) { return answer.data.results; }));
    });
  }

  /* Follow many images with one request a round instead of one each (imagesById). follow(id, onUpdate):
     onUpdate(image) after every answer, onUpdate(null) once the image is gone; it stops being followed
     when done or failed. Every 1 s while something changes, slowing to every 5 s while nothing does. */
  function imageWatcher(listUrl) {
    var followed = {};  // id -> {onUpdate, status}
    var timer = null;
    var busy = false;
    var delay = 1000;

    function schedule(wait) {
      if (busy || !Object.keys(followed).length) return;
      if (timer !== null) clearTimeout(timer);
      timer = setTimeout(tick, wait);
    }

    /* Hands each answer to its follower; true when something changed. */
    function dispatch(ids, images) {
      var changed = false;
      var listed = {};
      images.forEach(function (image) {
        listed[image.id] = true;
        var entry = followed[image.id];
        if (!entry) return;
        changed = changed || entry.status !== image.status;
        entry.status = image.status;
        if (FINAL[image.status]) delete followed[image.id];
        entry.onUpdate(image);
      });
      ids.forEach(function (id) {
        if (listed[id] || !followed[id]) return;
        var gone = followed[id];
        delete followed[id];
        changed = true;
        gone.onUpdate(null);
      });
      return changed;
    }

    function tick() {
      timer = null;
      busy = true;
      var ids = Object.keys(followed);
      imagesById(listUrl, ids).then(function (images) {
        busy = false;
        var changed = images !== null && dispatch(ids, images);  // a failed round is tried again
        delay = changed ? 1000 : Math.min(5000, delay * 1.25);
        schedule(delay);
      });
    }

    return function follow(id, onUpdate) {
      followed[id] = { onUpdate: onUpdate, status: null };
      delay = 1000;
      if (timer === null) schedule(delay);
    };
  }

  /* el("p", {class: "x", text: "..."}, [children]): builds elements with text only, never parsed HTML. */
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      var value = attrs[key];
      if (value === null || value === undefined || value === false) return;
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value === true ? "" : value);
    });
    (children || []).forEach(function (child) {
      if (child !== null && child !== undefined) node.append(child);
    });
    return node;
  }

  /* The API's search snippets are HTML-escaped text with <mark> around matches. Rebuild them from text
     nodes and <mark> elements only, so no other markup or attribute could ever reach the page. */
  function snippet(html) {
    var parsed = new DOMParser().parseFromString("<body>" + html + "</body>", "text/html");
    var out = document.createDocumentFragment();
    parsed.body.childNodes.forEach(function (node) {
      if (node.nodeType === Node.ELEMENT_NODE && node.tagName === "MARK") {
        out.append(el("mark", { text: node.textContent }));
      } else {
        out.append(document.createTextNode(node.textContent));
      }
    });
    return out;
  }

  function statusBadge(status) {
    return el("span", { class: "status status-" + status, text: status });
  }

  /* A caption as the pages show it (captions_ui.sentence): a capital first letter and a full stop. */
  function sentence(text) {
    var clean = (text || "").trim();
    if (!clean) return "";
    clean = clean.charAt(0).toUpperCase() + clean.slice(1);
    var end = clean.replace(/["'”’)]+$/, "").slice(-1);
    return end && ".!?…".indexOf(end) >= 0 ? clean : clean + ".";
  }

  var CONFIDENCE_WORDS = { high: "likely right", medium: "unsure", low: "probably wrong" };

  /* The model's confidence in a caption as the pages say it (captions_ui, _confidence.html): words and a
     small bar. The thresholds come from the page (`holder`'s data-confidence-high and
     data-needs-review-below, from the settings); null for a caption without a confidence. */
  function confidence(value, holder) {
    if (typeof value !== "number") return null;
    var high = Number(holder.dataset.confidenceHigh || 0.6);
    var low = Number(holder.dataset.needsReviewBelow || 0.3);
    var level = value >= high ? "high" : value < low ? "low" : "medium";
    var percent = Math.max(0, Math.min(100, Math.round(100 * value)));
    return el("span", { class: "confidence confidence-" + level,
                        title: "The model gives it a " + percent + "% chance of being right" }, [
      el("span", { class: "meter", "aria-hidden": "true" }, [el("span", { style: "width: " + percent + "%" })]),
      CONFIDENCE_WORDS[level],
    ]);
  }

  function formatSize(bytes) {
    if (bytes < 1024) return bytes + " B";
    if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(0) + " KB";
    return (bytes / 1024 / 1024).toFixed(1) + " MB";
  }

  window.imgcap = {
    api: api, upload: upload, watch: watch, imageWatcher: imageWatcher, imagesById: imagesById,
    el: el, snippet: snippet, sentence: sentence, confidence: confidence,
    statusBadge: statusBadge, formatSize: formatSize, FINAL: FINAL,
  };
})();
