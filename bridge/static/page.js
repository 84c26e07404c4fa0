// alert-sms bridge operator page: refreshes the notifications from /api/notifications every
// few seconds (the filters in force, open rows kept open). Plain DOM, text only: nothing that
// comes from an alert is ever parsed as HTML.
"use strict";
(function () {
  var section = document.getElementById("notifications");
  var list = document.getElementById("notification-list");
  var filters = document.getElementById("filters");
  if (!section || !list || !filters) return;
  var every = (parseFloat(section.getAttribute("data-refresh")) || 5) * 1000;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function kv(dl, name, value, cls) {
    dl.appendChild(el("dt", null, name));
    var dd = el("dd", cls);
    if (value instanceof Node) dd.appendChild(value); else dd.textContent = String(value);
    dl.appendChild(dd);
  }
  function row(n, open) {
    var d = el("details", "note");
    d.setAttribute("data-id", n.id);
    if (open) d.open = true;
    var s = el("summary");
    s.appendChild(el("span", "t", n.created_local));
    s.appendChild(document.createTextNode(" "));
    s.appendChild(el("span", "state " + n.state, n.state));
    s.appendChild(document.createTextNode(" "));
    s.appendChild(el("b", null, n.alertname || "-"));
    s.appendChild(document.createTextNode(" " + n.status + " \u2192 " + n.mobile + " "));
    s.appendChild(el("span", "muted", "via " + n.route));
    d.appendChild(s);
    var dl = el("dl", "kv");
    kv(dl, "Reason", n.reason || "-", "reason");
    var vars = el("table", "vars");
    Object.keys(n.variables || {}).forEach(function (k) {
      var tr = el("tr");
      tr.appendChild(el("th", null, k));
      tr.appendChild(el("td", null, n.variables[k]));
      vars.appendChild(tr);
    });
    kv(dl, "Variables", vars);
    kv(dl, "tpl_id", n.tpl_id);
    kv(dl, "tpl_value", el("code", "wrap", n.tpl_value));
    kv(dl, "Juhe sid / fee", (n.sid || "-") + " / " + (n.fee === null || n.fee === undefined ? "-" : n.fee));
    kv(dl, "Attempts", n.attempts);
    kv(dl, "Fingerprint", el("code", null, n.fingerprint));
    kv(dl, "Updated", n.updated_local);
    d.appendChild(dl);
    return d;
  }
  function refresh() {
    if (document.visibilityState === "hidden") return;
    var q = new URLSearchParams();
    new FormData(filters).forEach(function (v, k) { if (v) q.set(k, v); });
    q.set("limit", "50");
    fetch("/api/notifications?" + q.toString(), {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (data) {
        var open = {};
        list.querySelectorAll("details[open]").forEach(function (d) { open[d.getAttribute("data-id")] = true; });
        var frag = document.createDocumentFragment();
        (data.notifications || []).forEach(function (n) { frag.appendChild(row(n, open[n.id])); });
        if (!data.notifications || !data.notifications.length) frag.appendChild(el("p", "muted", "No notifications."));
        list.replaceChildren(frag);
        section.removeAttribute("data-stale");
      })
      .catch(function () { section.setAttribute("data-stale", "true"); });
  }
  setInterval(refresh, every);
})();
