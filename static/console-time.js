// Gatehouse console: times in the browser's own zone.
//
// Every <time datetime="…"> the server renders says "5 min ago" with the exact UTC time
// as its title, which is what a page without JavaScript keeps. Here each one shows the
// local date and time instead; the UTC time (and the relative one) stays on hover, and
// for keyboard and touch users the time is focusable (a tap focuses it) and shows the
// same text as a tooltip, which is also its accessible description, so a screen reader
// reads "1 Dec 2026, 09:05:12" then "2026-12-01 08:05:12 UTC, 5 min ago". Escape hides it.
// Rows that arrive later (the sessions table's refresh) are handled as they come.
//
// It also fills the audit log filter's hidden `tz` field with the browser's zone, so the
// times typed in its date fields are read as local times, and shows the values the
// server rendered in UTC in local time. No inline script anywhere (the CSP forbids it).
"use strict";

(function () {
  var tipCount = 0;
  var dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  var timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });

  function sameDay(a, b) {
    return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
  }

  function localize(time) {
    if (time.dataset.local) return;
    var when = new Date(time.getAttribute("datetime") || "");
    if (isNaN(when.getTime())) return;
    time.dataset.local = "1";
    var relative = (time.textContent || "").trim();
    var utc = time.getAttribute("title") || when.toISOString();
    var detail = relative && relative !== utc ? utc + ", " + relative : utc;
    time.textContent = sameDay(when, new Date()) ? timeOnly.format(when) : dateTime.format(when);
    time.setAttribute("title", detail);
    if (time.closest("a, button, label, summary")) return; // already focusable: no nested stop
    var wrap = document.createElement("span");
    wrap.className = "when";
    var tip = document.createElement("span");
    tip.className = "utc-tip";
    tip.id = "utc-tip-" + (++tipCount);
    tip.textContent = detail;
    time.tabIndex = 0;
    time.setAttribute("aria-describedby", tip.id);
    time.parentNode.insertBefore(wrap, time);
    wrap.appendChild(time);
    wrap.appendChild(tip);
    time.addEventListener("keydown", function (event) {
      if (event.key === "Escape") wrap.classList.add("tip-dismissed");
    });
    time.addEventListener("blur", function () { wrap.classList.remove("tip-dismissed"); });
    wrap.addEventListener("mouseleave", function () { wrap.classList.remove("tip-dismissed"); });
  }

  function localizeAll(root) {
    if (root.matches && root.matches("time[datetime]")) localize(root);
    if (root.querySelectorAll) root.querySelectorAll("time[datetime]").forEach(localize);
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function inputValue(date) {
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate()) +
      "T" + pad(date.getHours()) + ":" + pad(date.getMinutes());
  }

  // The audit log's filter form: rendered in UTC when the server did not know the zone.
  function zoneForm() {
    var field = document.querySelector("input[data-zone-field]");
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (!field || !zone) return;
    if (!field.value) {
      document.querySelectorAll("input[data-zone-input]").forEach(function (input) {
        if (!input.value) return;
        var utc = new Date(input.value + ":00Z");
        if (!isNaN(utc.getTime())) input.value = inputValue(utc);
      });
      field.value = zone;
    }
    document.querySelectorAll("[data-zone-hint]").forEach(function (hint) {
      hint.textContent = field.value === zone ? "(local time, " + zone + ")" : "(" + field.value + ")";
      hint.setAttribute("title", field.value);
    });
  }

  function start() {
    localizeAll(document.body);
    zoneForm();
    new MutationObserver(function (changes) {
      changes.forEach(function (change) { change.addedNodes.forEach(localizeAll); });
    }).observe(document.body, { childList: true, subtree: true });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
