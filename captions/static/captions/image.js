/* The image page: the attention viewer (hover, focus or tap a word to see where the model looked; Play
   steps through the sentence) and, while the image is being captioned, a reload once it is done. The
   words are one Tab stop (a roving tabindex: the active word has tabindex 0, the others -1); arrow keys,
   Home and End move along the sentence. */
(function () {
  "use strict";
  var ic = window.imgcap;
  var page = document.getElementById("image-page");
  if (!ic || !page) return;

  if (page.dataset.status === "pending" || page.dataset.status === "processing") {
    ic.watch(page.dataset.api, function (image) {
      if (image && ic.FINAL[image.status]) window.location.reload();
    });
  }

  var section = document.getElementById("attention");
  var photo = document.getElementById("photo");
  var canvas = document.getElementById("heatmap");
  if (!section || !photo || !canvas) return;
  var wordList = document.getElementById("words");
  var playButton = document.getElementById("play");
  var statusLine = document.getElementById("attention-status");
  var scale = document.getElementById("heat-scale");
  var STEP_MS = 900;
  var attention = null;  // the API's answer: words, grid {height, width}, maps (0-255 per cell)
  var pinned = -1;       // the word chosen by click or tap; hover and focus show others for a moment
  var shown = -1;
  var timer = null;

  /* An inferno-like colour ramp (perceptually ordered, readable without colour vision): near black
     where the model hardly looked, through purple and red to pale yellow where it looked most. */
  var RAMP = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
              [250, 193, 39], [252, 255, 164]];

  function heat(v) {
    var x = Math.max(0, Math.min(1, v)) * (RAMP.length - 1);
    var i = Math.min(RAMP.length - 2, Math.floor(x)), f = x - i;
    return [0, 1, 2].map(function (c) { return Math.round(RAMP[i][c] + f * (RAMP[i + 1][c] - RAMP[i][c])); });
  }

  /* The legend under the photo: the same ramp, low to high. */
  function paintScale() {
    if (!scale) return;
    var context = scale.getContext("2d");
    var data = context.createImageData(scale.width, 1);
    for (var x = 0; x < scale.width; x++) {
      var rgb = heat(x / (scale.width - 1));
      data.data.set([rgb[0], rgb[1], rgb[2], 255], 4 * x);
    }
    for (var y = 0; y < scale.height; y++) context.putImageData(data, 0, y);
  }

  /* The word's grid as a tiny image drawn over the photo at full size (the browser's smoothing upsamples
     it), coloured by the ramp: dark and more opaque where the model looked least, so what it looked at
     stands out bright. Each map is stretched to its own range: soft attention is spread thin, and what
     matters is where it is highest. */
  function draw(index) {
    shown = index;
    var width = photo.clientWidth, height = photo.clientHeight;
    var scale = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(width * scale));
    canvas.height = Math.max(1, Math.round(height * scale));
    var context = canvas.getContext("2d");
    context.clearRect(0, 0, canvas.width, canvas.height);
    wordList.querySelectorAll("button").forEach(function (button, i) {
      button.setAttribute("aria-pressed", String(i === index));
    });
    if (index >= 0) rove(index);
    if (index < 0 || !attention) {
      delete section.dataset.word;
      statusLine.textContent = "";
      return;
    }
    var grid = attention.grid, map = attention.maps[index];
    var low = Math.min.apply(null, map), high = Math.max.apply(null, map);
    var span = high > low ? high - low : 1;
    var layer = document.createElement("canvas");
    layer.width = grid.width;
    layer.height = grid.height;
    var colours = layer.getContext("2d").createImageData(grid.width, grid.height);
    for (var k = 0; k < map.length; k++) {
      var v = (map[k] - low) / span, rgb = heat(v);
      colours.data.set([rgb[0], rgb[1], rgb[2], Math.round(255 * (0.78 - 0.3 * v))], 4 * k);
    }
    layer.getContext("2d").putImageData(colours, 0, 0);
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = "high";
    context.drawImage(layer, 0, 0, canvas.width, canvas.height);
    section.dataset.word = attention.words[index];
    statusLine.textContent = "Showing “" + attention.words[index] + "” (word " + (index + 1) + " of " +
      attention.words.length + ").";
  }

  function stop() {
    if (timer) clearInterval(timer);
    timer = null;
    playButton.setAttribute("aria-pressed", "false");
    playButton.textContent = "▶ Play";
  }

  function play() {
    if (timer) { stop(); draw(pinned); return; }
    var i = 0;
    playButton.setAttribute("aria-pressed", "true");
    playButton.textContent = "■ Stop";
    draw(i);
    timer = setInterval(function () {
      i += 1;
      if (i >= attention.words.length) { stop(); draw(pinned); return; }
      draw(i);
    }, STEP_MS);
  }

  /* The one word of the sentence that Tab reaches (the last one shown or focused). */
  function rove(index) {
    wordList.querySelectorAll("button").forEach(function (button, i) {
      button.tabIndex = i === index ? 0 : -1;
    });
  }

  function build(data) {
    attention = data;
    wordList.replaceChildren();
    data.words.forEach(function (word, index) {
      var button = ic.el("button", { type: "button", class: "word", "aria-pressed": "false",
                                     tabindex: index === 0 ? "0" : "-1", text: word });
      button.addEventListener("mouseenter", function () { if (!timer) draw(index); });
      button.addEventListener("focus", function () { rove(index); if (!timer) draw(index); });
      button.addEventListener("click", function () {
        stop();
        pinned = pinned === index ? -1 : index;
        draw(pinned === -1 ? index : pinned);
      });
      button.addEventListener("keydown", function (event) {
        var next = { ArrowRight: index + 1, ArrowDown: index + 1, ArrowLeft: index - 1, ArrowUp: index - 1,
                     Home: 0, End: data.words.length - 1 }[event.key];
        if (event.key === "Escape") { stop(); pinned = -1; draw(-1); return; }
        if (next === undefined) return;
        event.preventDefault();
        var buttons = wordList.querySelectorAll("button");
        buttons[Math.max(0, Math.min(buttons.length - 1, next))].focus();
      });
      wordList.append(button);
    });
    paintScale();
    wordList.addEventListener("mouseleave", function () { if (!timer) draw(pinned); });
    playButton.addEventListener("click", play);
    section.hidden = false;
  }

  ic.api("GET", section.dataset.url).then(function (answer) {
    if (!answer.ok) return;  // no maps (e.g. captions imported without attention): nothing to show
    var load = function () { build(answer.data); };
    if (photo.complete && photo.naturalWidth) load(); else photo.addEventListener("load", load);
  });

  // Keep the heatmap aligned when the photo is resized (window, phone rotation).
  if (window.ResizeObserver) new ResizeObserver(function () { if (attention) draw(shown); }).observe(photo);
})();

/* Left and Right arrows go to the newer and older photo (the gallery's order), unless a field, the
   caption's words or a button have the keys. */
(function () {
  "use strict";
  document.addEventListener("keydown", function (event) {
    if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
    var target = event.target;
    if (target.closest && target.closest("input, textarea, select, button, [role=toolbar], [contenteditable]")) return;
    var link = document.getElementById(event.key === "ArrowLeft" ? "newer-photo" : event.key === "ArrowRight" ? "older-photo" : "");
    if (link) { event.preventDefault(); window.location.href = link.href; }
  });
})();
