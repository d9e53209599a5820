// sftp-connector console: the only script. It follows a run started from "Run now" by polling
// /live.json and writes what it reads with textContent (never as HTML). No inline script anywhere:
// the Content-Security-Policy allows scripts from this file's origin only.
(function () {
  "use strict";

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
  }

  function render(prefix, state) {
    var status = document.getElementById(prefix + "-status");
    var body = document.querySelector("#" + prefix + "-progress tbody");
    if (!status || !body) { return; }
    if (!state) { status.textContent = "none yet"; return; }
    status.textContent = state.status + (state.dry_run ? " (dry run)" : "") + " · started by " + state.user + " ";
    if (state.run) {
      var link = document.createElement("a");
      link.href = "/history/" + encodeURIComponent(state.run);
      link.id = prefix + "-run";
      link.textContent = state.run;
      status.appendChild(link);
    }
    if (state.error) {
      var error = document.createElement("span");
      error.className = "error-text";
      error.textContent = " " + state.error;
      status.appendChild(error);
    }
    body.textContent = "";
    state.progress.forEach(function (p) {
      var row = document.createElement("tr");
      cell(row, p.what);
      cell(row, p.done + " " + p.unit);
      cell(row, p.total ? p.total + " " + p.unit : "");
      var bar = document.createElement("progress");
      bar.max = p.total || 1;
      bar.value = Math.min(p.done, p.total || 1);
      var td = document.createElement("td");
      td.appendChild(bar);
      row.appendChild(td);
      body.appendChild(row);
    });
  }

  // Follow one section's run: poll while it runs, then reload the page once so that what the run changed
  // (its outcome per goal, the goals' locks) is read anew.
  function follow(section) {
    var seenRunning = false;
    var source = section.getAttribute("data-live-source");

    function poll() {
      fetch(source, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (state) {
          render(section.id, state);
          if (state && state.running) {
            seenRunning = true;
            window.setTimeout(poll, 500);
          } else if (seenRunning) {
            window.location.reload();
          } else if (section.id === "scheduled") {
            window.setTimeout(poll, 3000);  // the daemon's next run starts on its own: keep looking
          }
        })
        .catch(function () { window.setTimeout(poll, 2000); });
    }
    poll();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var sections = document.querySelectorAll("[data-live-source]");
    Array.prototype.forEach.call(sections, function (section) {
      if (section.getAttribute("data-live") || section.id === "scheduled") { follow(section); }
    });
  });
}());
