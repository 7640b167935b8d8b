// Refreshes the page's live part every few seconds without a full reload: it fetches the same
// URL as a fragment and swaps it in. Paused while the tab is hidden, while a <details> in it is
// open (the reader is looking at it) and while text in it is selected.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !live.dataset.refreshMs) { return; }
  var interval = parseInt(live.dataset.refreshMs, 10) || 5000;
  var busy = false;

  function quiet() {
    if (document.hidden || busy) { return false; }
    if (live.querySelector("details[open]")) { return false; }
    var selection = window.getSelection && window.getSelection();
    return !(selection && selection.toString());
  }

  function refresh() {
    if (!quiet()) { return; }
    busy = true;
    fetch(window.location.href, {
      headers: { "X-Dashboard-Fragment": "1" },
      credentials: "same-origin",
      redirect: "manual"
    }).then(function (response) {
      // A redirect (the session ended) or an error: stop here; a reload shows why.
      if (response.status !== 200) { return null; }
      return response.text();
    }).then(function (html) {
      if (html !== null) {
        live.innerHTML = html;
        live.dataset.refreshedAt = String(Date.now());
      }
    }).catch(function () { /* offline for a moment: try again at the next tick */ })
      .then(function () { busy = false; });
  }

  window.setInterval(refresh, interval);
})();
