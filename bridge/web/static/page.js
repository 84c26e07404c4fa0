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
    s.appendChild(document.createTextNode(" " + n.status + " \u2192 "));
    if (n.person) { s.appendChild(el("b", "who", n.person)); s.appendChild(document.createTextNode(" ")); }
    s.appendChild(document.createTextNode(n.mobile + " "));
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

// The episodes: firing and acknowledged ones, then the recently resolved, from /api/episodes
// every few seconds (the same bridge.intake.readside.episodes the page was rendered from). Text only;
// the Acknowledge form posts to the page (/episodes/<id>/ack) with the CSRF token. No refresh
// while a name is being typed into one of its forms.
(function () {
  var section = document.getElementById("episodes");
  var active = document.getElementById("episode-list");
  var resolved = document.getElementById("resolved-list");
  if (!section || !active || !resolved) return;
  var every = (parseFloat(section.getAttribute("data-refresh")) || 5) * 1000;
  var csrf = section.getAttribute("data-csrf") || "";
  var resolvedLimit = section.getAttribute("data-resolved") || "10";

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function add(parent) {
    for (var i = 1; i < arguments.length; i++) {
      var c = arguments[i];
      parent.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return parent;
  }
  function card(e) {
    var a = el("article", "episode " + e.state);
    a.setAttribute("data-id", e.id);
    add(a, add(el("div", "ep-head"), el("span", "state " + e.state, e.state), " ",
               el("b", "ep-name", e.alertname || "-"), " ",
               el("span", "muted", "since " + (e.starts_at_local || "-"))));
    if (e.summary) a.appendChild(el("p", "ep-summary", e.summary));
    if (e.acknowledged_by) {
      add(a, add(el("p", "ep-ack"), "Acknowledged by ", el("b", null, e.acknowledged_by),
                 " at " + e.acknowledged_at_local + " (via " + e.acknowledged_via + ")"));
    }
    if (e.resolved_at) a.appendChild(el("p", "ep-resolved", "Resolved at " + e.resolved_at_local));
    if (e.silence_id) {
      add(a, add(el("p", "ep-silence"), "Silenced in Alertmanager: ", el("code", null, e.silence_id),
                 e.state === "resolved" ? " (expired at resolve)" : ""));
    }
    var ul = el("ul");
    (e.paged || []).forEach(function (p) {
      var li = add(el("li"), el("b", null, p.person || "-"), " " + p.mobile + " ",
                   el("span", "muted", "queued " + p.at_local +
                      (p.sent_at_local ? ", " + (p.state === "failed" ? "failed " : "sent ") +
                       p.sent_at_local : "") + ", " +
                      (p.level === 0 ? "route " + p.route : "step " + p.level)));
      if (p.state) add(li, " ", el("span", "state " + p.state, p.state));
      ul.appendChild(li);
    });
    if (!ul.children.length) ul.appendChild(el("li", "muted", "nobody"));
    add(a, add(el("div", "ep-paged"), el("span", "label", "Paged"), ul));
    if (e.escalation && e.escalation.length) {
      var ol = el("ol");
      e.escalation.forEach(function (s) {
        var li = add(el("li"), "after " + s.after_text + " \u2192 " + s.receiver + ": due " +
                     (s.due_at_local || "after the first SMS goes out") +
                     (s.ran_at_local ? ", ran " + s.ran_at_local : "") + " ",
                     el("span", "state " + s.state, s.state));
        li.setAttribute("data-index", s.index);
        if (s.reason) add(li, " ", el("span", "muted", "(" + s.reason + ")"));
        ol.appendChild(li);
      });
      add(a, add(el("div", "ep-steps"), el("span", "label", "Escalation"), ol));
    }
    if (e.state === "firing") {
      var f = el("form", "ack");
      f.method = "post";
      f.action = "/episodes/" + encodeURIComponent(e.id) + "/ack";
      var t = el("input"); t.type = "hidden"; t.name = "csrf"; t.value = csrf;
      var by = el("input"); by.name = "by"; by.maxLength = 64;
      by.placeholder = "your name (else operator)"; by.setAttribute("aria-label", "acknowledge as");
      var btn = el("button", "ack-button", "Acknowledge"); btn.type = "submit";
      add(f, t, by, " ", btn);
      a.appendChild(f);
    }
    return a;
  }
  // what fires first: the count in the title and the header badge
  function firingCount(n) {
    var badge = document.getElementById("firing-count");
    if (badge) {
      badge.textContent = n + " firing";
      badge.setAttribute("data-count", String(n));
      badge.className = "firing-count" + (n ? " hot" : "");
    }
    document.title = (n ? "(" + n + " firing) " : "") + "alert-sms bridge";
  }
  function get(state, limit) {
    return fetch("/api/episodes?state=" + state + "&limit=" + limit,
                 {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
      .then(function (data) { return data.episodes || []; });
  }
  function fill(target, list, none) {
    var frag = document.createDocumentFragment();
    list.forEach(function (e) { frag.appendChild(card(e)); });
    if (!list.length) frag.appendChild(el("p", "muted", none));
    target.replaceChildren(frag);
  }
  function refresh() {
    if (document.visibilityState === "hidden") return;
    if (section.contains(document.activeElement) && document.activeElement.tagName === "INPUT") return;
    Promise.all([get("firing", 50), get("acknowledged", 50), get("resolved", resolvedLimit)])
      .then(function (r) {
        if (section.contains(document.activeElement) && document.activeElement.tagName === "INPUT") return;
        fill(active, r[0].concat(r[1]), "Nothing firing.");
        firingCount(r[0].length);
        fill(resolved, r[2], "None.");
        section.removeAttribute("data-stale");
      })
      .catch(function () { section.setAttribute("data-stale", "true"); });
  }
  setInterval(refresh, every);
})();
