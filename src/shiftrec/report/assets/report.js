/* shiftrec report: renders the embedded JSON (script#report-data) with Plotly. No network. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var CFG = { displaylogo: false, responsive: true,
    toImageButtonOptions: { format: "png", scale: 2 } };
  var PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
    "#ff9da7", "#9c755f", "#bab0ac", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#aec7e8"];

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "cls") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }
  function fmt(x, d) { return (x === null || x === undefined || isNaN(x)) ? "–" : Number(x).toFixed(d === undefined ? 4 : d); }
  function int(x) { return (x === null || x === undefined) ? "–" : Number(x).toLocaleString("en-US"); }
  function colour(i) { return PALETTE[i % PALETTE.length]; }
  function plot(id, data, layout) {
    layout = Object.assign({ margin: { l: 60, r: 20, t: 36, b: 50 }, font: { family:
      'system-ui, "WenQuanYi Micro Hei", "Noto Sans CJK SC", sans-serif' } }, layout || {});
    Plotly.newPlot(id, data, layout, CFG);
  }
  function kpi(label, value) { return el("div", { cls: "kpi" }, [el("b", { text: value }), el("span", { text: label })]); }

  // ------------------------------------------------------------------ data
  function renderData(S) {
    var a = S.accounting, rules = Object.keys(a.filtered_by_rule || {}).filter(function (k) { return a.filtered_by_rule[k] > 0; });
    var k = document.getElementById("data-kpis");
    k.appendChild(kpi("rows in", int(a.rows_in)));
    k.appendChild(kpi("accepted", int(a.accepted)));
    k.appendChild(kpi("quarantined", int(a.quarantined)));
    k.appendChild(kpi("filtered by rule", int(rules.reduce(function (s, r) { return s + a.filtered_by_rule[r]; }, 0))));
    k.appendChild(kpi("users", int(S.counts.users)));
    k.appendChild(kpi("items", int(S.counts.items)));
    k.appendChild(kpi("events", int(S.counts.events)));
    if (S.counts.time_span) k.appendChild(kpi("time span", S.counts.time_span.join(" … ")));
    k.appendChild(kpi("balanced", a.balanced === null || a.balanced === undefined ? "–" : (a.balanced ? "yes" : "NO")));
    // accounting: one bar for rows in, one stacked bar for where they went
    var traces = [{ type: "bar", name: "rows in", x: ["rows in"], y: [a.rows_in], marker: { color: "#16213e" } },
      { type: "bar", name: "accepted", x: ["accounted for"], y: [a.accepted], marker: { color: "#59a14f" } },
      { type: "bar", name: "quarantined", x: ["accounted for"], y: [a.quarantined], marker: { color: "#e15759" } }];
    rules.forEach(function (r, i) {
      traces.push({ type: "bar", name: "filtered: " + r, x: ["accounted for"], y: [a.filtered_by_rule[r]], marker: { color: colour(i + 1) } });
    });
    plot("chart-accounting", traces, { barmode: "stack", title: { text: "Ingest accounting: rows in = accepted + quarantined + filtered by rule" }, yaxis: { title: "rows" } });
    var ts = Object.keys(S.events_over_time).map(function (name, i) {
      var s = S.events_over_time[name];
      return { type: "scatter", mode: "lines", stackgroup: "one", name: name, x: s.x, y: s.y, line: { color: colour(i) } };
    });
    plot("chart-events", ts, { title: { text: "Events per week" }, yaxis: { title: "events" } });
    var reasons = S.quarantine_reasons || [];
    if (reasons.length) {
      plot("chart-quarantine", [{ type: "bar", orientation: "h", x: reasons.map(function (r) { return r[1]; }),
        y: reasons.map(function (r) { return r[0]; }), marker: { color: "#e15759" } }],
        { title: { text: "Quarantine: top reasons" }, margin: { l: 260, r: 20, t: 36, b: 40 }, yaxis: { autorange: "reversed" } });
    } else {
      document.getElementById("chart-quarantine").appendChild(el("p", { cls: "muted", text: "Nothing was quarantined." }));
    }
    var e = S.events_per_user_edges, h = S.events_per_user_hist;
    plot("chart-peruser", [{ type: "bar", x: h.map(function (_, i) { return (e[i] + e[i + 1]) / 2; }), y: h, marker: { color: "#4e79a7" } }],
      { title: { text: "Events per user (median " + fmt(S.counts.events_per_user_median, 0) + ")" }, xaxis: { title: "events" }, yaxis: { title: "users" } });
  }

  // ------------------------------------------------------------------ models
  function renderModels(S) {
    var metricSel = document.getElementById("metric-select");
    var ms = [];
    ["recall", "ndcg", "mrr"].forEach(function (m) { S.ks.forEach(function (k) { ms.push(m + "@" + k); }); });
    ms.forEach(function (m) { var o = el("option", { value: m, text: m.toUpperCase() }); if (m === "ndcg@10") o.selected = true; metricSel.appendChild(o); });
    // table: every run, every metric, with its 95% interval
    var tbl = document.getElementById("models-table");
    var head = el("tr", {}, [el("th", { text: "run" }), el("th", { text: "users" })]);
    ms.forEach(function (m) { head.appendChild(el("th", { text: m })); });
    tbl.appendChild(head);
    var best = {};
    ms.forEach(function (m) { best[m] = Math.max.apply(null, S.runs.map(function (r) { return r.metrics[m]; })); });
    S.runs.forEach(function (r) {
      var tr = el("tr", {}, [el("td", { text: r.name }), el("td", { text: int(r.n_users) })]);
      ms.forEach(function (m) {
        var td = el("td", { cls: r.metrics[m] === best[m] ? "best" : "" }, [el("span", { text: fmt(r.metrics[m]) }), el("br"),
          el("span", { cls: "ci", text: "[" + fmt(r.ci95[m][0]) + ", " + fmt(r.ci95[m][1]) + "]" })]);
        tr.appendChild(td);
      });
      tbl.appendChild(tr);
    });
    function draw() {
      var m = metricSel.value;
      plot("chart-models", [{ type: "bar", x: S.runs.map(function (r) { return r.name; }), y: S.runs.map(function (r) { return r.metrics[m]; }),
        error_y: { type: "data", symmetric: false, array: S.runs.map(function (r) { return r.ci95[m][1] - r.metrics[m]; }),
          arrayminus: S.runs.map(function (r) { return r.metrics[m] - r.ci95[m][0]; }) },
        marker: { color: S.runs.map(function (_, i) { return colour(i); }) } }],
        { title: { text: m.toUpperCase() + " with bootstrap 95% intervals (" + S.n_boot + " resamples of users)" }, yaxis: { title: m } });
    }
    metricSel.addEventListener("change", draw);
    draw();
    var withSlices = S.runs.filter(function (r) { return r.slices && r.slices.shifted; });
    if (withSlices.length) {
      var tr = [];
      ["shifted", "stable"].forEach(function (sl, i) {
        tr.push({ type: "bar", name: sl + " (" + int(withSlices[0].slices[sl].n_users) + " users)", x: withSlices.map(function (r) { return r.name; }),
          y: withSlices.map(function (r) { return r.slices[sl]["ndcg@10"]; }),
          error_y: { type: "data", symmetric: false,
            array: withSlices.map(function (r) { var c = r.slices[sl]["ndcg@10_ci95"]; return c ? c[1] - r.slices[sl]["ndcg@10"] : 0; }),
            arrayminus: withSlices.map(function (r) { var c = r.slices[sl]["ndcg@10_ci95"]; return c ? r.slices[sl]["ndcg@10"] - c[0] : 0; }) },
          marker: { color: i ? "#59a14f" : "#e15759" } });
      });
      plot("chart-slices", tr, { barmode: "group", title: { text: "NDCG@10 on shifted vs stable users (test item's topic outside / inside the user's dominant topics)" }, yaxis: { title: "NDCG@10" } });
    } else {
      document.getElementById("chart-slices").appendChild(el("p", { cls: "muted", text: "No shifted/stable slices (give --topics and a split)." }));
    }
    var pt = document.getElementById("paired-table");
    pt.appendChild(el("tr", {}, ["A", "B", "metric", "mean A", "mean B", "B − A", "95% CI of B − A", "t-test p", "Wilcoxon p", "users"].map(function (h, i) { return el("th", { text: h, cls: i < 3 ? "l" : "" }); })));
    S.paired.forEach(function (t) {
      if (t.error) { pt.appendChild(el("tr", {}, [el("td", { text: t.a }), el("td", { cls: "l", text: t.b }), el("td", { cls: "l", text: t.error, colspan: "8" })])); return; }
      var sig = t.ci95[0] > 0 || t.ci95[1] < 0;
      pt.appendChild(el("tr", {}, [el("td", { text: t.a }), el("td", { cls: "l", text: t.b }), el("td", { cls: "l", text: t.metric }),
        el("td", { text: fmt(t.mean_a) }), el("td", { text: fmt(t.mean_b) }), el("td", { cls: sig ? "best" : "", text: fmt(t.diff) }),
        el("td", { text: "[" + fmt(t.ci95[0]) + ", " + fmt(t.ci95[1]) + "]" }), el("td", { text: Number(t.t_test_p).toExponential(2) }),
        el("td", { text: t.wilcoxon_p === null ? "–" : Number(t.wilcoxon_p).toExponential(2) }), el("td", { text: int(t.n_users) })]));
    });
  }

  // ------------------------------------------------------------------ migration
  function sankeyOf(S, pi) {
    var p = S.pairs[pi], T = S.topics.length, m = p.matrix;
    var left = [], right = [], li = {}, ri = {};
    for (var i = 0; i < T; i++) {
      var out = 0, inn = 0;
      for (var j = 0; j < T; j++) { out += m[i][j]; inn += m[j][i]; }
      if (out > 0) left.push(i);
      if (inn > 0) right.push(i);
    }
    var labels = [], colors = [], x = [], y = [];
    left.forEach(function (t, n) { li[t] = labels.length; labels.push(S.topics[t]); colors.push(colour(t)); x.push(0.01); y.push((n + 0.5) / left.length); });
    right.forEach(function (t, n) { ri[t] = labels.length; labels.push(S.topics[t]); colors.push(colour(t)); x.push(0.99); y.push((n + 0.5) / right.length); });
    var src = [], dst = [], val = [], lc = [];
    for (var a = 0; a < T; a++) for (var b = 0; b < T; b++) if (m[a][b] > 0) {
      src.push(li[a]); dst.push(ri[b]); val.push(m[a][b]);
      lc.push(a === b ? "rgba(180,180,180,0.35)" : hexA(colour(a), 0.55));
    }
    return { type: "sankey", arrangement: "snap", node: { label: labels, color: colors, pad: 8, thickness: 14, x: x, y: y },
      link: { source: src, target: dst, value: val, color: lc } };
  }
  function hexA(h, a) { var n = parseInt(h.slice(1), 16); return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + a + ")"; }
  function renderMigration(S) {
    var sel = document.getElementById("pair-select");
    var last = 0;
    S.pairs.forEach(function (p, i) {
      var o = el("option", { value: String(i), text: p.window_a[0] + "…" + p.window_a[1] + "  →  " + p.window_b[0] + "…" + p.window_b[1] + (p.message ? "  (" + p.message + ")" : "  (" + int(p.moved) + " moved)") });
      sel.appendChild(o);
      if (!p.message) last = i;
    });
    sel.value = String(last);
    function draw() {
      var pi = Number(sel.value), p = S.pairs[pi], box = document.getElementById("chart-sankey");
      if (p.message) { Plotly.purge(box); box.textContent = p.message; box.setAttribute("data-nodes", "0"); return; }
      box.textContent = "";
      var tr = sankeyOf(S, pi);
      box.setAttribute("data-nodes", String(tr.node.label.length));
      plot(box, [tr], { title: { text: "Dominant topic of " + int(p.users_both) + " returning users: " + int(p.moved) + " moved (" + Math.round(100 * p.moved / Math.max(1, p.users_both)) + "%), grey = stayed" }, height: Math.max(420, 26 * Math.max(tr.node.label.length / 2, 8)) });
      var tb = document.getElementById("pair-top");
      tb.textContent = "";
      tb.appendChild(el("tr", {}, ["from", "to", "users", "share of source"].map(function (h, i) { return el("th", { text: h, cls: i < 2 ? "l" : "" }); })));
      (p.top_migrations || []).forEach(function (r) { tb.appendChild(el("tr", {}, [el("td", { text: r.from }), el("td", { cls: "l", text: r.to }), el("td", { text: int(r.count) }), el("td", { text: r.rate === null ? "–" : (100 * r.rate).toFixed(1) + "%" })])); });
    }
    sel.addEventListener("change", draw);
    draw();
    var xs = S.pairs.map(function (p) { return p.window_a[0] + "→" + p.window_b[0]; });
    plot("chart-largest", (S.largest || []).slice(0, 8).map(function (r, i) {
      return { type: "scatter", mode: "lines+markers", name: r.from + " → " + r.to, x: xs, y: r.counts, line: { color: colour(i) } };
    }), { title: { text: "Largest migrations over consecutive window pairs" }, yaxis: { title: "users whose dominant topic moved" }, legend: { orientation: "h", y: -0.35 }, margin: { l: 60, r: 20, t: 36, b: 120 } });
    var tt = document.getElementById("topics-table");
    var terms = S.terms;
    tt.appendChild(el("tr", {}, ["#", "topic", "distinctive terms", "items"].map(function (h, i) { return el("th", { text: h, cls: i < 3 ? "l" : "" }); })));
    S.topics.forEach(function (n, i) {
      tt.appendChild(el("tr", {}, [el("td", { text: String(i) }), el("td", { cls: "l", text: n }),
        el("td", { cls: "l terms", text: terms ? (terms.terms[i] || []).join(", ") : "" }), el("td", { text: terms ? int(terms.sizes[i]) : "" })]));
    });
  }

  // ------------------------------------------------------------------ shoppers
  function renderShoppers(S) {
    var list = document.getElementById("user-list"), search = document.getElementById("user-search");
    var items = S.users.map(function (u, i) {
      var li = el("li", { "data-user": u.user_id }, [document.createTextNode(u.user_id + " "),
        el("span", { cls: "tag " + (u.shifted ? "shift" : "stable"), text: u.shifted ? "shifted" : "stable" }),
        el("span", { cls: "muted", text: " " + u.n_events + " events" })]);
      li.addEventListener("click", function () { show(i); });
      list.appendChild(li);
      return li;
    });
    search.addEventListener("input", function () {
      var q = search.value.trim().toLowerCase(), first = -1;
      S.users.forEach(function (u, i) {
        var hit = !q || u.user_id.toLowerCase().indexOf(q) >= 0;
        items[i].style.display = hit ? "" : "none";
        if (hit && first < 0) first = i;
        if (hit && u.user_id.toLowerCase() === q) first = i;
      });
      var exact = S.users.findIndex(function (u) { return u.user_id.toLowerCase() === q; });
      if (exact >= 0) show(exact); else if (first >= 0 && q) show(first);
    });
    function show(i) {
      items.forEach(function (li) { li.classList.remove("active"); });
      items[i].classList.add("active");
      var u = S.users[i];
      document.getElementById("user-title").textContent = "User " + u.user_id + (u.shifted ? " (shift detected)" : "") + (u.low_confidence ? " — low confidence: few events" : "");
      var x = u.times.map(function (_, k) { return k; });
      var tr = Object.keys(u.mix).map(function (t) {
        return { type: "scatter", mode: "lines", stackgroup: "mix", name: S.topics[Number(t)], x: x, y: u.mix[t], line: { width: 0.5, color: colour(Number(t)) },
          text: u.times, hovertemplate: "%{text}<br>%{fullData.name}: %{y:.2f}<extra></extra>" };
      });
      tr.push({ type: "scatter", mode: "markers", name: "event's topic", x: x, y: x.map(function () { return 1.04; }), marker: { symbol: "square", size: 7, color: u.topics.map(colour) },
        text: u.topics.map(function (t, k) { return u.times[k] + ": " + S.topics[t]; }), hovertemplate: "%{text}<extra></extra>", showlegend: false });
      var shapes = u.shifts.map(function (s) { return { type: "line", x0: s.index, x1: s.index, y0: 0, y1: 1.08, line: { color: "#111", dash: "dash", width: 1.5 } }; });
      var ann = u.shifts.map(function (s) { return { x: s.index, y: 1.1, text: "shift → " + s.to.join(", ") + " (" + s.date + ")", showarrow: false, font: { size: 11 }, xanchor: "left" }; });
      plot("chart-timeline", tr, { title: { text: "Interest timeline: recent topic mix per event; dashed = detected shift" }, shapes: shapes, annotations: ann,
        xaxis: { title: "event" }, yaxis: { title: "recent topic mix", range: [0, 1.15] }, legend: { orientation: "h", y: -0.25 }, margin: { l: 60, r: 20, t: 50, b: 90 } });
      var sh = document.getElementById("user-shifts");
      sh.textContent = "";
      u.shifts.forEach(function (s) { sh.appendChild(el("li", { text: s.date + ": " + (s.from.length ? s.from.join(", ") : "–") + " → " + s.to.join(", ") + " (confidence " + fmt(s.confidence, 2) + ")" })); });
      if (!u.shifts.length) sh.appendChild(el("li", { cls: "muted", text: "no shift detected" }));
      var rc = document.getElementById("user-recent");
      rc.textContent = "";
      u.recent.forEach(function (r) { rc.appendChild(el("li", { text: r.title ? r.title + " (" + r.item_id + ")" : r.item_id })); });
      var rt = document.getElementById("user-recs");
      rt.textContent = "";
      if (!u.recs) { rt.appendChild(el("tr", {}, [el("td", { cls: "muted", text: S.has_recs ? "no recommendations" : "Recommendations need a servable run (shiftrec report --run RUN with a run written by the serve layer)." })])); return; }
      if (u.recs.error) { rt.appendChild(el("tr", {}, [el("td", { cls: "muted", text: u.recs.error })])); return; }
      rt.appendChild(el("tr", {}, ["#", "item", "title", "score", "why"].map(function (h, k) { return el("th", { text: h, cls: k < 3 || k === 4 ? "l" : "" }); })));
      u.recs.items.forEach(function (it, k) {
        var why = el("td", { cls: "l" }, it.reasons.map(function (r) { return el("span", { cls: "reason" }, [el("b", { text: r.kind }), document.createTextNode(r.text)]); }));
        rt.appendChild(el("tr", { cls: "rec" }, [el("td", { text: String(k + 1) }), el("td", { cls: "l", text: it.item_id }), el("td", { cls: "l", text: it.title || "" }), el("td", { text: fmt(it.score, 3) }), why]));
      });
    }
    if (S.users.length) show(0);
  }

  // ------------------------------------------------------------------ reproduce
  function renderReproduce(S) {
    var t = document.getElementById("fp-table");
    t.appendChild(el("tr", {}, ["artifact", "path", "fingerprint"].map(function (h) { return el("th", { cls: "l", text: h }); })));
    S.fingerprints.forEach(function (f) { t.appendChild(el("tr", {}, [el("td", { text: f.what }), el("td", { cls: "l", text: f.path }), el("td", { cls: "l" }, [el("code", { text: f.fingerprint || "–" })])])); });
    document.getElementById("commands").textContent = S.commands.length ? S.commands.join("\n") : "(not recorded)";
    document.getElementById("versions").textContent = Object.keys(S.versions).map(function (k) { return k + " " + S.versions[k]; }).join(", ") + "; report written " + S.created;
  }

  var sections = { data: renderData, models: renderModels, migration: renderMigration, shoppers: renderShoppers, reproduce: renderReproduce };
  Object.keys(sections).forEach(function (k) {
    if (D[k] && document.getElementById("sec-" + k)) {
      try { sections[k](D[k]); } catch (e) { console.error("section " + k + ": " + e); throw e; }
    }
  });
  document.body.setAttribute("data-ready", "1");
})();
