/* The token page: a Copy button, where the browser allows the clipboard. */
(function () {
  "use strict";
  var button = document.getElementById("copy-token");
  var key = document.getElementById("token-key");
  if (!button || !key || !navigator.clipboard) return;
  button.hidden = false;
  button.addEventListener("click", function () {
    navigator.clipboard.writeText(key.textContent.trim()).then(function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    });
  });
})();
