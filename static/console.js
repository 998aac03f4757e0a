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

// The sessions table's self-refresh: every 3 s while the tab is visible. When the server
// cannot list in time (503: the administrators' time limit, or the database is away)
// the rows stay as they were, the note says so and since when, and the next try waits
// longer (up to 30 s), so open tabs do not press on a database that is already slow.
var REFRESH_MS = 3000;
var SLOWEST_MS = 30000;

function clockTime(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function startRefresh(tbody, note) {
  var url = tbody.dataset.refresh;
  var wait = REFRESH_MS;
  var shown = new Date();
  function tick() {
    if (document.hidden) return schedule();
    // X-Gatehouse-Refresh: this fetch is not the operator at work, so it does not keep
    // the console session from idling out. Once it has (a redirect to the login page),
    // reload, so an untouched tab stops showing sessions and shows the login page.
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html", "X-Gatehouse-Refresh": "1" } })
      .then(function (r) {
        if (r.redirected) window.location.reload();
        if (r.redirected || !r.ok) throw new Error(r.status === 503 ? "slow" : "refresh " + r.status);
        return r.text();
      })
      .then(function (html) {
        tbody.innerHTML = html; // server-rendered by Jinja with autoescape
        armConfirms(tbody);
        shown = new Date();
        wait = REFRESH_MS;
        if (note) { note.textContent = note.dataset.live; note.classList.remove("stale"); }
      })
      .catch(function (e) {
        wait = Math.min(wait * 2, SLOWEST_MS);
        if (!note) return;
        var why = e.message === "slow"
          ? "The database took too long to list sessions"
          : "The sessions could not be refreshed";
        note.textContent = why + "; these rows are from " + clockTime(shown) +
          ". Trying again in " + Math.round(wait / 1000) + " s.";
        note.classList.add("stale");
      })
      .finally(schedule);
  }
  function schedule() { setTimeout(tick, wait); }
  schedule();
}

document.addEventListener("DOMContentLoaded", function () {
  armConfirms(document);
  var rows = document.getElementById("session-rows");
  if (rows && rows.dataset.refresh) startRefresh(rows, document.getElementById("refresh-note"));
});
