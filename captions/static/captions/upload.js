/* The upload page: drop or pick photos and each is sent on its own (its own progress bar, its own
   rejection message), then watched until the worker writes its caption; the files of one drop make one
   batch. URLs and zip archives go to the batch endpoint, which fetches or unpacks them server-side.
   Without JavaScript the form posts as usual. */
(function () {
  "use strict";
  var ic = window.imgcap;
  var form = document.getElementById("upload-form");
  if (!form || !ic) return;
  var zone = document.getElementById("dropzone");
  var picker = document.getElementById("id_images");
  var list = document.getElementById("uploads");
  var summary = document.getElementById("upload-summary");
  var PARALLEL = 3;  // uploads at once: enough to keep the line busy, few enough to show steady progress
  var queue = [];
  var running = 0;
  var counts = { sent: 0, captioned: 0, rejected: 0, failed: 0 };
  // One request a round follows every upload of the page, however many were dropped.
  var follow = ic.imageWatcher(form.dataset.imageApi);

  form.querySelectorAll(".js-only").forEach(function (node) { node.hidden = false; });

  function visibility() {
    var select = form.querySelector('[name="visibility"]');
    return select ? select.value : "private";
  }

  // The album chosen for this visit's uploads ("" for none): every file and batch goes into it.
  function album() {
    var select = form.querySelector('[name="album"]');
    return select ? select.value : "";
  }

  function updateSummary() {
    var parts = [];
    if (counts.sent) parts.push(counts.sent + " uploaded");
    if (counts.captioned) parts.push(counts.captioned + " captioned");
    if (counts.failed) parts.push(counts.failed + " failed");
    if (counts.rejected) parts.push(counts.rejected + " not accepted");
    summary.textContent = parts.join(" · ");
  }

  /* One row per file, URL or archive member: name, progress, then status, then caption or reason. */
  function addRow(name, previewUrl, size) {
    var preview = ic.el("img", { class: "preview", alt: "", src: previewUrl || null });
    // Not a picture the browser can show (it will likely be rejected): a plain grey box instead.
    preview.addEventListener("error", function () {
      var box = ic.el("span", { class: "preview", "aria-hidden": "true" });
      preview.replaceWith(box);
      preview = box;
    });
    var status = ic.statusBadge("uploading");
    var progress = ic.el("progress", { max: "1", value: "0", "aria-label": "Upload of " + name });
    var detail = ic.el("div", { class: "detail" }, [progress]);
    var title = ic.el("span", { class: "name", title: name, text: name });
    var meta = size ? ic.el("span", { class: "tag", text: ic.formatSize(size) }) : null;
    var row = ic.el("li", { class: "upload-row" }, [
      preview, ic.el("div", {}, [title, meta ? ic.el("br") : null, meta]), status, detail,
    ]);
    list.prepend(row);

    function setStatus(value) {
      var badge = ic.statusBadge(value);
      status.replaceWith(badge);
      status = badge;
      row.dataset.status = value;
    }
    function setDetail(node) { detail.replaceChildren(node); }

    var handle = {
      row: row,
      progress: function (fraction) { progress.value = fraction; },
      reject: function (message) {
        counts.rejected += 1;
        row.classList.add("rejected");
        setStatus("rejected");
        setDetail(ic.el("p", { class: "reason", text: message }));
        updateSummary();
      },
      /* The API took it: show its state, then follow it until the worker is done with it. */
      accepted: function (image, note) {
        if (image.urls && image.urls.thumb) {
          // The server's small thumbnail replaces the local file: a thousand dropped photos are not
          // kept decoded at full size.
          if (preview.src && preview.src.indexOf("blob:") === 0) URL.revokeObjectURL(preview.src);
          preview.src = image.urls.thumb;
        }
        row.dataset.image = image.id;
        show(image, note);
        // Batch items come without their caption: those are fetched once even when already done.
        if (ic.FINAL[image.status] && image.caption !== undefined) { count(image); return; }
        follow(image.id, function (fresh) {
          if (fresh === null) { handle.reject("The image was deleted."); return; }
          show(fresh, note);
          if (ic.FINAL[fresh.status]) count(fresh);
        });
      },
    };

    function show(image, note) {
      setStatus(image.status);
      // A near copy (resized, re-encoded, turned) of one the owner has is stored anyway, and said so.
      var near = image.near_duplicate_of ? "looks like image " + image.near_duplicate_of : "";
      var notes = [note, near].filter(Boolean).join(" · ");
      var prefix = notes ? notes + " · " : "";
      if (image.status === "done" && image.caption) {
        var link = ic.el("a", { href: image.urls.page, text: ic.sentence(image.caption.text) });
        var sure = ic.confidence(image.caption.confidence, form);
        setDetail(ic.el("div", {}, [
          ic.el("p", { class: "caption" }, [link]),
          ic.el("span", { class: "tag" }, [prefix + image.caption.source, sure ? " · " : null, sure]),
          image.needs_review ? " " : null,
          image.needs_review ? ic.el("span", { class: "review", text: "needs review",
                                                title: "The model is probably wrong about this caption" }) : null,
        ]));
      } else if (image.status === "failed") {
        setDetail(ic.el("p", { class: "reason", text: "Captioning failed: " + (image.error || "unknown error") }));
      } else {
        setDetail(ic.el("p", { class: "live-note muted" }, [
          ic.el("span", { class: "spinner", "aria-hidden": "true" }),
          ic.el("span", { text: prefix + "waiting for the captioner…" }),
        ]));
      }
    }

    return handle;
  }

  function count(image) {
    if (image.status === "done") counts.captioned += 1; else counts.failed += 1;
    updateSummary();
  }

  function sendNext() {
    while (running < PARALLEL && queue.length) {
      running += 1;
      sendFile(queue.shift()).then(function () { running -= 1; sendNext(); });
    }
  }

  /* The files of one drop (or pick) are one submission: the first accepted file opens a batch
     (POST /api/v1/batches/) and the others join it (POST /api/v1/images/ with batch=ID), so the drop
     gets a batch page, with its rejections and exports, while every file keeps its own request. */
  function sendFile(job) {
    var group = job.group;
    if (group.batchId === null && group.opening) {
      // Another file is opening the batch: wait, then join it (or open it, if that file was refused).
      return group.opening.then(function () { return sendFile(job); });
    }
    var data = new FormData();
    data.append("visibility", visibility());
    if (album()) data.append("album", album());
    if (group.batchId !== null) {
      data.append("image", job.file, job.file.name);
      data.append("batch", group.batchId);
      return ic.upload(form.dataset.imageApi, data, job.row.progress).then(function (answer) {
        if (!answer.ok) { job.row.reject(answer.message); return; }
        counts.sent += 1;
        updateSummary();
        job.row.accepted(answer.data, answer.data.duplicate ? "already uploaded" : "");
      });
    }
    data.append("images", job.file, job.file.name);
    group.opening = ic.upload(form.dataset.batchApi, data, job.row.progress).then(function (answer) {
      group.opening = null;
      if (!answer.ok) {
        var refused = (answer.data && answer.data.error && answer.data.error.rejected) || [];
        job.row.reject(refused.length ? refused[0].message : answer.message);
        return;
      }
      var batch = answer.data;
      var item = batch.items[0];
      group.batchId = batch.id;
      counts.sent += 1;
      updateSummary();
      job.row.accepted({ id: item.id, status: item.status, urls: item.urls, caption: undefined },
                       item.duplicate ? "already uploaded" : "");
      announceBatch(batch);
    });
    return group.opening;
  }

  function addFiles(files) {
    var group = { batchId: null, opening: null };
    Array.prototype.forEach.call(files, function (file) {
      var preview = /^image\//.test(file.type) ? URL.createObjectURL(file) : null;
      queue.push({ file: file, group: group, row: addRow(file.name, preview, file.size) });
    });
    sendNext();
  }

  function announceBatch(batch) {
    var link = ic.el("a", { href: batch.urls.page, text: "batch #" + batch.id });
    list.prepend(ic.el("li", { class: "muted small batch-link" }, ["Follow the whole submission on its page: ", link]));
  }

  /* URLs and archives: one batch request; its items and rejections become rows. */
  function sendBatch(body, label) {
    var pending = addRow(label, null, 0);
    if (album()) {
      if (body instanceof FormData) body.append("album", album());
      else body.album = Number(album());
    }
    var request = body instanceof FormData
      ? ic.upload(form.dataset.batchApi, body, pending.progress)
      : ic.api("POST", form.dataset.batchApi, body);
    return request.then(function (answer) {
      var rejected = answer.ok ? answer.data.rejected : (answer.data && answer.data.error && answer.data.error.rejected) || [];
      pending.row.remove();
      rejected.forEach(function (item) { addRow(item.name, null, 0).reject(item.message); });
      if (!answer.ok) {
        if (!rejected.length) addRow(label, null, 0).reject(answer.message);
        return;
      }
      var batch = answer.data;
      batch.items.forEach(function (item) {
        counts.sent += 1;
        addRow(item.name, item.urls.thumb, 0).accepted(
          { id: item.id, status: item.status, urls: item.urls, caption: undefined },
          item.duplicate ? "already uploaded" : "");
      });
      updateSummary();
      announceBatch(batch);
    });
  }

  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (event) {
      event.preventDefault();
      zone.classList.add("over");
    });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function () { zone.classList.remove("over"); });
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) addFiles(event.dataTransfer.files);
  });
  // Dropping next to the zone must not make the browser open the photo instead of this page.
  window.addEventListener("dragover", function (event) { event.preventDefault(); });
  window.addEventListener("drop", function (event) { event.preventDefault(); });

  picker.addEventListener("change", function () {
    if (picker.files.length) addFiles(picker.files);
    picker.value = "";
  });

  /* The URL box: one URL a line (captions.ingest.split_urls splits the same way). A line is split on
     commas and spaces only when every piece looks like a URL, so "not a url" is one line, refused once
     with its reason, not three. */
  var LOOKS_LIKE_URL = /^[a-z][a-z0-9+.-]*:\/\/\S+$/i;

  function splitUrls(text) {
    var urls = [];
    text.split(/\r?\n|\r/).forEach(function (line) {
      line = line.trim();
      var pieces = line.split(/[\s,]+/).filter(Boolean);
      if (pieces.length > 1 && pieces.every(function (piece) { return LOOKS_LIKE_URL.test(piece); })) {
        urls.push.apply(urls, pieces);
      } else if (line) {
        urls.push(line);
      }
    });
    return urls;
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var urls = form.querySelector('[name="urls"]');
    var archive = form.querySelector('[name="archive"]');
    var lines = splitUrls(urls.value);
    var sent = false;
    if (lines.length) {
      sendBatch({ urls: lines, visibility: visibility() }, lines.length + " URL" + (lines.length > 1 ? "s" : ""));
      urls.value = "";
      sent = true;
    }
    if (archive.files.length) {
      var data = new FormData();
      data.append("archive", archive.files[0], archive.files[0].name);
      data.append("visibility", visibility());
      sendBatch(data, archive.files[0].name);
      archive.value = "";
      sent = true;
    }
    if (!sent) {
      summary.textContent = "Drop or pick photos, paste image URLs, or choose a zip archive first.";
      zone.focus();
    }
  });
})();
