// tidegate: progressive enhancement only (every page works without it): each <time> shown in
// the viewer's own time zone beside its relative form, kept current; and copy buttons.
"use strict";
(function () {
  function relative(ms) {
    var s = Math.round(Math.abs(ms) / 1000), text;
    if (s < 5) return "just now";
    if (s < 60) text = s + " s";
    else if (s < 3600) text = Math.floor(s / 60) + " min";
    else if (s < 86400) {
      var m = Math.floor((s % 3600) / 60);
      text = Math.floor(s / 3600) + " h" + (m ? " " + m + " min" : "");
    } else text = Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
    return ms < 0 ? text + " ago" : "in " + text;
  }
  function update() {
    var now = Date.now();
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      var t = new Date(el.getAttribute("datetime"));
      if (isNaN(t)) return;
      var local = t.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
      el.textContent = relative(t - now) + " (" + local + ")";
      el.title = local;
    });
  }
  update();
  setInterval(update, 30000);
})();
// Copy buttons: data-copy names the element whose text goes to the clipboard.
(function () {
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source || !navigator.clipboard) return;
      navigator.clipboard.writeText(source.textContent).then(function () {
        button.textContent = "Copied";
      });
    });
  });
})();
