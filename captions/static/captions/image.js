/* The image page: the attention viewer (hover, focus or tap a word to see where the model looked; Play
   steps through the sentence) and, while the image is being captioned, a reload once it is done. */
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
  var STEP_MS = 900;
  var attention = null;  // the API's answer: words, grid {height, width}, maps (0-255 per cell)
  var pinned = -1;       // the word chosen by click or tap; hover and focus show others for a moment
  var shown = -1;
  var timer = null;

  /* Warm colours for where the model looked most: yellow, then orange-red at the peak. */
  function heat(v) {
    return [255, Math.round(225 - 155 * v), Math.round(80 - 50 * v)];
  }

  /* The word's grid as two tiny images drawn over the photo at full size (the browser's smoothing upsamples
     them): a shade that darkens what the model ignored, and a glow where it looked. Each map is stretched
     to its own range: soft attention is spread thin, and what matters is where it is highest. */
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
    if (index < 0 || !attention) {
      delete section.dataset.word;
      statusLine.textContent = "";
      return;
    }
    var grid = attention.grid, map = attention.maps[index];
    var low = Math.min.apply(null, map), high = Math.max.apply(null, map);
    var span = high > low ? high - low : 1;
    var shade = document.createElement("canvas"), glow = document.createElement("canvas");
    [shade, glow].forEach(function (layer) { layer.width = grid.width; layer.height = grid.height; });
    var dark = shade.getContext("2d").createImageData(grid.width, grid.height);
    var warm = glow.getContext("2d").createImageData(grid.width, grid.height);
    for (var k = 0; k < map.length; k++) {
      var v = (map[k] - low) / span, rgb = heat(v);
      dark.data[4 * k + 3] = Math.round(255 * 0.72 * (1 - v));
      warm.data[4 * k] = rgb[0];
      warm.data[4 * k + 1] = rgb[1];
      warm.data[4 * k + 2] = rgb[2];
      warm.data[4 * k + 3] = Math.round(255 * 0.5 * v * v);
    }
    shade.getContext("2d").putImageData(dark, 0, 0);
    glow.getContext("2d").putImageData(warm, 0, 0);
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = "high";
    context.drawImage(shade, 0, 0, canvas.width, canvas.height);
    context.drawImage(glow, 0, 0, canvas.width, canvas.height);
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

  function build(data) {
    attention = data;
    wordList.replaceChildren();
    data.words.forEach(function (word, index) {
      var button = ic.el("button", { type: "button", class: "word", "aria-pressed": "false", text: word });
      button.addEventListener("mouseenter", function () { if (!timer) draw(index); });
      button.addEventListener("focus", function () { if (!timer) draw(index); });
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
      wordList.append(ic.el("li", {}, [button]));
    });
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
