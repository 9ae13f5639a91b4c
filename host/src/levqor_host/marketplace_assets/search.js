// Levqor marketplace: filter the connector cards as you type. No network, no dependencies.
(function () {
  "use strict";
  function ready() {
    var input = document.getElementById("q");
    var count = document.getElementById("count");
    var cards = Array.prototype.slice.call(document.querySelectorAll("#connectors .card"));
    if (!input) return;
    function update() {
      var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      cards.forEach(function (card) {
        var text = card.getAttribute("data-search") || "";
        var hit = words.every(function (w) { return text.indexOf(w) !== -1; });
        card.hidden = !hit;
        if (hit) shown += 1;
      });
      count.textContent = shown + " of " + cards.length + " connectors";
    }
    var fromHash = decodeURIComponent((location.hash || "").replace(/^#q=/, ""));
    if (fromHash && location.hash.indexOf("#q=") === 0) input.value = fromHash;
    input.addEventListener("input", update);
    update();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", ready);
  else ready();
})();
