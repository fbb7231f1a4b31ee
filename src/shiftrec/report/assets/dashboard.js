/* shiftrec live dashboard: polls the service's endpoints (same origin). */
(function () {
  "use strict";
  var POLL = Number(document.body.getAttribute("data-poll-ms")) || 2000;
  var CFG = { displaylogo: false, responsive: true };
  var FONT = { family: 'system-ui, "WenQuanYi Micro Hei", "Noto Sans CJK SC", sans-serif' };
  var user = null, lastUserKey = "";
  function $(id) { return document.getElementById(id); }
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { if (k === "text") e.textContent = attrs[k]; else if (k === "cls") e.className = attrs[k]; else e.setAttribute(k, attrs[k]); });
    (kids || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }
  function headers() { var t = $("token").value.trim() || sessionStorage.getItem("shiftrec-token") || ""; return t ? { Authorization: "Bearer " + t } : {}; }
  $("token").addEventListener("change", function () { sessionStorage.setItem("shiftrec-token", $("token").value.trim()); });
  function get(path, text) {
    return fetch(path, { headers: headers(), cache: "no-store" }).then(function (r) {
      if (!r.ok) return r.text().then(function (b) { throw new Error(r.status + " " + b.slice(0, 200)); });
      return text ? r.text() : r.json();
    });
  }
  function status(s) { $("status").textContent = s; }

  function renderRecs(data) {
    var t = $("recs"); t.textContent = "";
    t.appendChild(el("tr", {}, ["#", "item", "title", "score", "why"].map(function (h, k) { return el("th", { text: h, cls: k === 3 ? "" : "l" }); })));
    (data.items || []).forEach(function (it, k) {
      var why = el("td", { cls: "l" }, (it.reasons || []).map(function (r) { return el("span", { cls: "reason" }, [el("b", { text: r.kind }), document.createTextNode(r.text)]); }));
      t.appendChild(el("tr", { cls: "rec" }, [el("td", { text: String(k + 1) }), el("td", { cls: "l", text: it.item_id }), el("td", { cls: "l", text: it.title || "" }), el("td", { text: Number(it.score).toFixed(3) }), why]));
    });
    var s = data.shift || {};
    $("user-shift").textContent = s.shifted ? "shift detected " + (s.at || "") + ": " + (s.from || []).join(", ") + " → " + (s.to || []).join(", ") : "no shift detected";
  }
  function renderInterests(d) {
    $("user-title").textContent = "User " + d.user_id + " · " + d.n_events + " events" + (d.known ? "" : " (new user)");
    var prof = d.profile || [];
    Plotly.react("chart-profile", [{ type: "bar", orientation: "h", x: prof.map(function (p) { return p.share; }), y: prof.map(function (p) { return p.topic; }), marker: { color: "#4e79a7" } }],
      { title: { text: "Current interest profile" }, font: FONT, margin: { l: 200, r: 20, t: 40, b: 40 }, yaxis: { autorange: "reversed" }, xaxis: { range: [0, 1], title: "share" } }, CFG);
    var sh = d.shifts || [];
    Plotly.react("chart-shifts", [{ type: "scatter", mode: "markers+text", x: sh.map(function (s) { return s.at; }), y: sh.map(function (s) { return (s.to || []).join(", "); }),
      text: sh.map(function (s) { return "from " + ((s.from || []).join(", ") || "–"); }),
      // labels lean inwards so the first and the last shift are not cut at the plot's edges
      textposition: sh.map(function (s, i) { return sh.length < 2 ? "top center" : i === 0 ? "top right" : i === sh.length - 1 ? "top left" : "top center"; }),
      cliponaxis: false, hovertemplate: "%{x}<br>%{text} → %{y}<extra></extra>", marker: { size: 12, color: "#e15759" } }],
      { title: { text: "Interest timeline: detected shifts (" + sh.length + ")" }, font: FONT, margin: { l: 200, r: 20, t: 40, b: 40 }, xaxis: { type: "date" } }, CFG);
  }
  function refreshUser() {
    if (!user) return Promise.resolve();
    var u = encodeURIComponent(user);
    return Promise.all([get("/v1/users/" + u + "/recommendations?k=10"), get("/v1/users/" + u + "/interests")]).then(function (r) {
      var key = JSON.stringify(r);
      if (key !== lastUserKey) { lastUserKey = key; renderRecs(r[0]); renderInterests(r[1]); document.body.setAttribute("data-user-version", String(Number(document.body.getAttribute("data-user-version") || 0) + 1)); }
      $("user-error").textContent = "";
    }).catch(function (e) { $("user-error").textContent = String(e.message || e); });
  }
  function refreshPlatform() {
    return get("/v1/migrations?windows=3").then(function (m) {
      var big = (m.largest_migrations || []).slice(0, 10);
      Plotly.react("chart-migrations", [{ type: "bar", orientation: "h", x: big.map(function (r) { return r.total; }), y: big.map(function (r) { return r.from + " → " + r.to; }), marker: { color: "#f28e2b" } }],
        { title: { text: "Largest migrations of dominant interest (users)" }, font: FONT, margin: { l: 320, r: 20, t: 40, b: 40 }, yaxis: { autorange: "reversed" } }, CFG);
      var t = $("migrations"); t.textContent = "";
      t.appendChild(el("tr", {}, ["window pair", "returning users", "moved", "top migration"].map(function (h, k) { return el("th", { text: h, cls: k === 0 || k === 3 ? "l" : "" }); })));
      (m.latest || []).forEach(function (p) {
        var top = (p.top_migrations || [])[0];
        t.appendChild(el("tr", {}, [el("td", { text: p.window_a[0] + " → " + p.window_b[1] }), el("td", { text: String(p.users_both) }), el("td", { text: String(p.moved) }), el("td", { cls: "l", text: top ? top.from + " → " + top.to + " (" + top.count + ")" : (p.message || "–") })]));
      });
    }).catch(function (e) { status("migrations: " + e.message); });
  }
  function refreshCounters() {
    return get("/metrics", true).then(function (txt) {
      var sums = {};
      txt.split("\n").forEach(function (line) {
        if (!line || line[0] === "#") return;
        var m = line.match(/^([a-zA-Z_:]+)(\{[^}]*\})?\s+([-0-9.eE+]+)$/);
        if (!m || /_bucket$|_sum$/.test(m[1])) return;
        sums[m[1]] = (sums[m[1]] || 0) + Number(m[3]);
      });
      var c = $("counters"); c.textContent = "";
      Object.keys(sums).sort().forEach(function (k) {
        c.appendChild(el("div", { cls: "kpi", "data-metric": k }, [el("b", { text: Number(sums[k]).toLocaleString("en-US") }), el("span", { text: k.replace(/^shiftrec_/, "") })]));
      });
    }).catch(function (e) { status("metrics: " + e.message); });
  }
  function tick() {
    Promise.all([refreshUser(), refreshCounters()]).then(function () { status("updated " + new Date().toLocaleTimeString()); });
  }
  $("user-form").addEventListener("submit", function (e) {
    e.preventDefault();
    user = $("user-id").value.trim() || null; lastUserKey = "";
    if (user) history.replaceState(null, "", "?user=" + encodeURIComponent(user));
    refreshUser();
  });
  get("/healthz").then(function (h) { $("run-info").textContent = "run " + h.run + " · model " + h.model + " · " + Number(h.items).toLocaleString("en-US") + " items · " + Number(h.users).toLocaleString("en-US") + " users"; })
    .catch(function (e) { $("run-info").textContent = "service unreachable: " + e.message; });
  var q = new URLSearchParams(location.search).get("user");
  if (q) { $("user-id").value = q; user = q; }
  refreshPlatform(); tick();
  setInterval(tick, POLL);
  setInterval(refreshPlatform, Math.max(10000, 5 * POLL));
})();
