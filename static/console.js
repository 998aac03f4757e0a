// Gatehouse console: confirmation on destructive forms, and the sessions table's
// self-refresh. No inline script anywhere (the CSP forbids it).
"use strict";

function armConfirms(root) {
  root.querySelectorAll("form[data-confirm]").forEach(function (form) {
    if (form.dataset.armed) return;
    form.dataset.armed = "1";
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
}

function startRefresh(tbody) {
  var url = tbody.dataset.refresh;
  var busy = false;
  setInterval(function () {
    if (busy || document.hidden) return;
    busy = true;
    // X-Gatehouse-Refresh: this fetch is not the operator at work, so it does not keep
    // the console session from idling out. Once it has (a redirect to the login page),
    // reload, so an untouched tab stops showing sessions and shows the login page.
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html", "X-Gatehouse-Refresh": "1" } })
      .then(function (r) {
        if (r.redirected) window.location.reload();
        if (r.redirected || !r.ok) throw new Error("refresh " + r.status);
        return r.text();
      })
      .then(function (html) {
        tbody.innerHTML = html; // server-rendered by Jinja with autoescape
        armConfirms(tbody);
      })
      .catch(function () { /* keep the last rows; try again next tick */ })
      .finally(function () { busy = false; });
  }, 3000);
}

document.addEventListener("DOMContentLoaded", function () {
  armConfirms(document);
  var rows = document.getElementById("session-rows");
  if (rows && rows.dataset.refresh) startRefresh(rows);
});
