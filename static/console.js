// Gatehouse console: live pages that never move what the operator is aiming at, and a
// tab that says so when its console session has ended. No inline script anywhere (the
// CSP forbids it); destructive actions confirm on their own pages, without script.
"use strict";

// Every fetch here says X-Gatehouse-Refresh: it is not the operator at work, so it does
// not keep the console session from idling out (handlers/console.py, is_self_refresh).
var REFRESH_MS = 3000;
var SLOWEST_MS = 30000;
var DASHBOARD_MS = 15000;
var ALIVE_MS = 30000;
var ended = false;

function clockTime(date) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function quietFetch(url) {
  return fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html", "X-Gatehouse-Refresh": "1" } })
    .then(function (r) {
      // A redirect (to the login page) or a 403: the console session has ended.
      if (r.redirected || r.status === 403) { sessionEnded(); throw new Error("ended"); }
      if (!r.ok) throw new Error(r.status === 503 ? "slow" : "refresh " + r.status);
      return r;
    });
}

// The console session idled out or was kicked: stop refreshing, hide what the page
// showed (an unattended screen stops showing accounts) and offer to log in again.
function sessionEnded() {
  if (ended) return;
  ended = true;
  var main = document.getElementById("main") || document.querySelector("main");
  if (!main) return;
  Array.prototype.forEach.call(main.children, function (child) { child.hidden = true; });
  var box = document.createElement("section");
  box.className = "notice ended";
  box.setAttribute("role", "alert");
  var text = document.createElement("p");
  text.textContent = "Your console session has ended, so this page no longer shows anything. ";
  var link = document.createElement("a");
  link.href = "/console/login?next=" + encodeURIComponent(location.pathname + location.search);
  link.textContent = "Log in again";
  link.className = "button";
  text.appendChild(link);
  box.appendChild(text);
  main.prepend(box);
  link.focus();
}

// The operator is busy when a control on the page has focus or text is selected:
// refreshing then could swap what they are about to click or copy, so it waits.
function operatorBusy() {
  var active = document.activeElement;
  var controls = "a, button, input, select, textarea, summary, [contenteditable], [tabindex]:not([tabindex='-1'])";
  if (active && active.matches(controls) &&
      active.closest("main")) return true;
  var selection = window.getSelection && window.getSelection();
  return !!(selection && selection.toString());
}

// The sessions table: every 3 s while the tab is visible, rows already shown are
// updated in place (state, last activity) and never reordered or removed; sessions
// that are new since the page was drawn are only announced ("3 new sessions: Show"),
// and appear when the operator asks. When the server cannot list in time (503) the
// rows stay, the note says since when, and the next try waits longer (up to 30 s).
function startSessionsRefresh(tbody, note, announce) {
  var wait = REFRESH_MS;
  var shown = new Date();
  var pending = [];

  // What the server last sent for each row: a row is redrawn only when that changes
  // (console-time.js rewrites the times in the page, so the page's own HTML differs).
  var served = {};

  function merge(html) {
    var fresh = document.createElement("tbody");
    fresh.innerHTML = html; // server-rendered by Jinja with autoescape
    Array.prototype.forEach.call(fresh.querySelectorAll("tr[id]"), function (row) {
      var current = document.getElementById(row.id);
      if (current) {
        if (served[row.id] !== row.innerHTML && !current.contains(document.activeElement)) {
          served[row.id] = row.innerHTML;
          current.className = row.className;
          current.innerHTML = row.innerHTML;
        }
      } else if (!pending.some(function (p) { return p.id === row.id; })) {
        pending.push(row);
      }
    });
    if (!announce) return;
    // Its space is kept while empty: showing it must not push the table down either.
    announce.classList.toggle("quiet", pending.length === 0);
    announce.querySelector("span").textContent = pending.length === 1
      ? "1 new session since this list was drawn."
      : pending.length + " new sessions since this list was drawn.";
  }

  if (announce) {
    announce.querySelector("button").addEventListener("click", function () {
      var empty = tbody.querySelector("tr.none");
      if (empty) empty.remove();
      pending.slice().reverse().forEach(function (row) { tbody.prepend(row); });
      pending = [];
      announce.classList.add("quiet");
      tbody.closest("table").focus(); // keyboard users continue from the table
    });
  }

  function tick() {
    if (ended) return;
    if (document.hidden || operatorBusy()) return schedule();
    quietFetch(tbody.dataset.refresh)
      .then(function (r) { return r.text(); })
      .then(function (html) {
        merge(html);
        shown = new Date();
        wait = REFRESH_MS;
        if (note) { note.textContent = note.dataset.live; note.classList.remove("stale"); }
      })
      .catch(function (e) {
        if (ended) return;
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
  function schedule() { if (!ended) setTimeout(tick, wait); }
  schedule();
}

// Pages drawn with [data-live] regions (the dashboard) redraw those regions from the
// page itself every 15 s, except one holding the operator's focus.
function startRegionsRefresh(regions) {
  function tick() {
    if (ended) return;
    if (document.hidden || operatorBusy()) return schedule();
    quietFetch(location.href)
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var page = new DOMParser().parseFromString(html, "text/html");
        regions.forEach(function (region) {
          var fresh = page.getElementById(region.id);
          if (fresh && !region.contains(document.activeElement)) region.innerHTML = fresh.innerHTML;
        });
      })
      .catch(function () {})
      .finally(schedule);
  }
  function schedule() { if (!ended) setTimeout(tick, DASHBOARD_MS); }
  schedule();
}

// Pages that do not refresh still notice, within 30 s, that the session has ended.
function startAliveCheck() {
  function tick() {
    if (ended) return;
    quietFetch("/console/alive").catch(function () {}).finally(function () { if (!ended) setTimeout(tick, ALIVE_MS); });
  }
  setTimeout(tick, ALIVE_MS);
}

document.addEventListener("DOMContentLoaded", function () {
  if (!document.querySelector("form.logout")) return; // logged out: the login page
  var rows = document.getElementById("session-rows");
  var regions = Array.prototype.slice.call(document.querySelectorAll("[data-live][id]"));
  if (rows && rows.dataset.refresh) {
    startSessionsRefresh(rows, document.getElementById("refresh-note"), document.getElementById("new-sessions"));
  } else if (regions.length) {
    startRegionsRefresh(regions);
  } else {
    startAliveCheck();
  }
});
