/* rlsae feature viewer: a static single-page app that works from file:// and any static host.
 *
 * Data files are JSONP-style scripts ("RLSAE.put(key, {...})") loaded on demand by <script>
 * injection, because fetch() of file:// URLs is blocked in browsers. Every string that comes
 * from data is put in the page with textContent / createTextNode, never as HTML.
 */
(function () {
  "use strict";

  var RLSAE = (window.RLSAE = { cache: {}, waiting: {} });

  RLSAE.put = function (key, data) {
    RLSAE.cache[key] = data;
    var w = RLSAE.waiting[key];
    if (w) {
      delete RLSAE.waiting[key];
      w.forEach(function (p) { p.resolve(data); });
    }
  };

  function load(key, src) {
    if (Object.prototype.hasOwnProperty.call(RLSAE.cache, key)) {
      return Promise.resolve(RLSAE.cache[key]);
    }
    return new Promise(function (resolve, reject) {
      var list = (RLSAE.waiting[key] = RLSAE.waiting[key] || []);
      list.push({ resolve: resolve, reject: reject });
      if (list.length > 1) return;
      var s = document.createElement("script");
      s.src = src;
      s.async = true;
      function fail(msg) {
        var w = RLSAE.waiting[key] || [];
        delete RLSAE.waiting[key];
        w.forEach(function (p) { p.reject(new Error(msg)); });
      }
      s.onload = function () {
        s.remove();
        if (!Object.prototype.hasOwnProperty.call(RLSAE.cache, key)) fail("no data in " + src);
      };
      s.onerror = function () { s.remove(); fail("could not load " + src); };
      document.head.appendChild(s);
    });
  }

  function loadScript(src) {
    return new Promise(function (resolve, reject) {
      var s = document.createElement("script");
      s.src = src;
      s.onload = resolve;
      s.onerror = function () { reject(new Error("could not load " + src)); };
      document.head.appendChild(s);
    });
  }

  // ---- DOM helpers: text only ------------------------------------------------------------
  function el(tag, attrs) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined) return;
        if (k === "class") e.className = v;
        else if (k === "text") e.textContent = String(v);
        else if (k === "style") Object.assign(e.style, v);
        else if (k.slice(0, 2) === "on") e.addEventListener(k.slice(2), v);
        else e.setAttribute(k, String(v));
      });
    }
    for (var i = 2; i < arguments.length; i++) add(e, arguments[i]);
    return e;
  }
  function add(parent, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { add(parent, c); }); return; }
    parent.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  var SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = String(attrs[k]);
      else e.setAttribute(k, String(attrs[k]));
    });
    for (var i = 2; i < arguments.length; i++) if (arguments[i]) e.appendChild(arguments[i]);
    return e;
  }

  function fmt(x, d) {
    if (x === null || x === undefined) return "–";
    if (typeof x !== "number") return String(x);
    if (x === 0) return "0";
    var a = Math.abs(x);
    if (a >= 1e5 || a < 1e-4) return x.toExponential(d === undefined ? 2 : d);
    if (Number.isInteger(x)) return String(x);
    return String(+x.toPrecision(d === undefined ? 4 : d + 1));
  }
  function pct(x) {
    if (x === null || x === undefined) return "–";
    if (x === 0) return "0%";
    if (x < 1e-4) return (x * 100).toExponential(1) + "%";
    return String(+(x * 100).toFixed(3)) + "%";
  }

  // ---- routing ---------------------------------------------------------------------------
  function route() {
    var p = new URLSearchParams(location.hash.replace(/^#/, ""));
    return {
      sae: p.get("sae"),
      f: p.get("f"),
      sort: p.get("sort") || "index",
      filter: p.get("filter") || "all",
      concept: p.get("concept") || "",
      score: p.get("score") || "",
      min: p.get("min") || "0.75",
      page: parseInt(p.get("page") || "0", 10) || 0,
    };
  }
  function href(params) {
    var p = new URLSearchParams();
    Object.keys(params).forEach(function (k) {
      if (params[k] !== null && params[k] !== undefined && params[k] !== "") p.set(k, params[k]);
    });
    var s = p.toString();
    return s ? "#" + s : "#";
  }

  var app = document.getElementById("app");
  var crumbs = document.getElementById("crumbs");

  function show(nodes, crumb) {
    app.textContent = "";
    add(app, nodes);
    crumbs.textContent = "";
    add(crumbs, crumb || []);
  }
  function showError(err) {
    show([el("p", { class: "error", text: "Error: " + (err && err.message ? err.message : err) })]);
  }

  function render() {
    var r = route();
    var p = load("index", "data/index.js").then(function (index) {
      if (!r.sae) return renderIndex(index);
      var entry = index.saes.filter(function (s) { return s.id === r.sae; })[0];
      if (!entry) throw new Error("no SAE " + r.sae + " in this export");
      if (entry.kind === "none") throw new Error("SAE " + entry.name + " has no feature pages");
      var base = "data/saes/" + entry.id + "/";
      return load(entry.id + "/summary", base + "summary.js").then(function (summary) {
        if (r.f === null) return renderBrowser(entry, summary, r);
        var f = parseInt(r.f, 10);
        if (!(f >= 0 && f < summary.d_sae)) {
          throw new Error("feature " + r.f + " does not exist (this SAE has " + summary.d_sae + " features)");
        }
        return load(entry.id + "/" + f, base + "features/" + f + ".js").then(function (feat) {
          renderFeature(entry, summary, feat);
        });
      });
    });
    p.catch(showError);
  }
  window.addEventListener("hashchange", function () { render(); window.scrollTo(0, 0); });

  // ---- index -----------------------------------------------------------------------------
  function renderIndex(index) {
    var parts = [el("h1", { text: "Run " + index.run })];
    (index.notes || []).forEach(function (n) { parts.push(el("p", { class: "note", text: n })); });
    if (index.reports && index.reports.length) {
      parts.push(el("p", { id: "reports" }, "Reports: ", index.reports.map(function (r, i) {
        return [i ? " · " : "", el("a", { href: r[1], text: r[0] })];
      })));
    }
    if (index.study) parts.push(studySection(index.study));
    if (index.agents_table) parts.push(agentsTable(index.agents_table));
    parts.push(el("h2", { text: "Sparse autoencoders" }));
    if (!index.saes.length) parts.push(el("p", { class: "muted", text: "No SAEs in this run yet." }));
    else parts.push(saeTable(index.saes));
    show(parts);
  }

  function studySection(st) {
    var div = el("div", { id: "study-plot", class: "plot" });
    var sec = el("section", null, el("h2", { text: "Live features vs mean return" }), div);
    var cap = [];
    ["linear", "quadratic"].forEach(function (k) {
      if (st[k]) cap.push(k + ": R² = " + fmt(st[k].r2) + ", p = " + fmt(st[k].p));
    });
    if (st.n !== undefined) cap.push("n = " + st.n);
    sec.appendChild(el("p", { class: "muted", text: cap.join(" · ") }));
    if (!st.grid) return sec;
    loadScript("static/plotly.min.js").then(function () {
      var esc = function (s) {
        return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
      };
      var traces = [{
        x: st.x, y: st.y, mode: "markers", type: "scatter", name: "agents",
        text: (st.labels || []).map(esc), marker: { size: 9 },
        hovertemplate: (st.labels ? "%{text}<br>" : "") + "%{x}, %{y:.4g}<extra></extra>",
      }];
      if (st.linear) traces.push({ x: st.grid, y: st.linear.curve, mode: "lines", line: { dash: "dash" },
        name: "linear (R²=" + fmt(st.linear.r2) + ", p=" + fmt(st.linear.p) + ")" });
      if (st.quadratic) traces.push({ x: st.grid, y: st.quadratic.curve, mode: "lines",
        name: "quadratic (R²=" + fmt(st.quadratic.r2) + ", p=" + fmt(st.quadratic.p) + ")" });
      window.Plotly.newPlot(div, traces, {
        xaxis: { title: { text: esc(st.x_label) } }, yaxis: { title: { text: esc(st.y_label) } },
        margin: { t: 20, r: 20 }, height: 380, legend: { orientation: "h", y: -0.25 },
      }, { displaylogo: false, responsive: true });
    }).catch(showError);
    return sec;
  }

  function agentsTable(t) {
    var head = el("tr", null, t.columns.map(function (c) { return el("th", { text: c }); }));
    var rows = t.rows.map(function (r) {
      return el("tr", null, r.map(function (v) { return el("td", { text: fmt(v) }); }));
    });
    return el("section", null, el("h2", { text: "Agents" }),
      el("div", { class: "scroll" }, el("table", { class: "grid-table" }, el("thead", null, head), el("tbody", null, rows))));
  }

  function saeTable(saes) {
    var cols = ["SAE", "kind", "d_sae", "arch", "rows", "L0", "FVU", "live", "dead", "notes"];
    var head = el("tr", null, cols.map(function (c) { return el("th", { text: c }); }));
    var rows = saes.map(function (s) {
      var m = s.metrics || {};
      var name = s.kind === "none" ? el("span", { text: s.name })
        : el("a", { href: href({ sae: s.id }), class: "sae-link", text: s.name });
      return el("tr", null,
        el("td", null, name), el("td", { text: s.kind }), el("td", { text: s.d_sae }),
        el("td", { text: s.arch + (s.k ? " k=" + s.k : "") + (s.tied ? " tied" : "") }),
        el("td", { text: fmt(m.rows) }), el("td", { text: fmt(m.l0) }), el("td", { text: fmt(m.fvu) }),
        el("td", { text: fmt(m.live) }), el("td", { text: fmt(m.dead) }),
        el("td", { class: "muted", text: (s.notes || []).join("; ") }));
    });
    return el("table", { class: "grid-table", id: "sae-table" }, el("thead", null, head), el("tbody", null, rows));
  }

  // ---- feature browser -------------------------------------------------------------------
  var PAGE = 100;

  function jumpBox(entry, summary) {
    var input = el("input", { id: "jump", type: "number", min: 0, max: summary.d_sae - 1, placeholder: "feature #" });
    var go = function (ev) {
      if (ev) ev.preventDefault();
      var f = parseInt(input.value, 10);
      if (f >= 0 && f < summary.d_sae) location.hash = href({ sae: entry.id, f: f });
      else input.setCustomValidity("0 – " + (summary.d_sae - 1)), input.reportValidity();
    };
    input.addEventListener("input", function () { input.setCustomValidity(""); });
    return el("form", { class: "jump", onsubmit: go }, el("label", { for: "jump", text: "Go to feature " }), input,
      el("button", { type: "submit", id: "jump-go", text: "Go" }));
  }

  var STRONG = 0.8;
  function renderBrowser(entry, summary, r) {
    var n = summary.d_sae;
    var idx = [];
    for (var i = 0; i < n; i++) {
      var dead = summary.density[i] === 0;
      if (r.filter === "live" && dead) continue;
      if (r.filter === "dead" && !dead) continue;
      if (r.concept && !(summary.concepts && summary.concepts[i] === r.concept)) continue;
      if (r.filter === "strong" && !(summary.match && summary.match[i] >= STRONG)) continue;
      if (r.score && !scoreAtLeast(summary, r.score, i, parseFloat(r.min))) continue;
      idx.push(i);
    }
    var key = { density: summary.density, max: summary.max, effect: summary.effect, match: summary.match }[r.sort];
    if (key) idx.sort(function (a, b) { return (key[b] || 0) - (key[a] || 0) || a - b; });
    var pages = Math.max(1, Math.ceil(idx.length / PAGE));
    var page = Math.min(Math.max(0, r.page), pages - 1);
    var dead = summary.density.filter(function (d) { return d === 0; }).length;

    var select = function (id, value, options, field) {
      var s = el("select", { id: id, onchange: function () {
        var q = { sae: entry.id, sort: r.sort, filter: r.filter, concept: r.concept, score: r.score, min: r.min };
        q[field] = s.value;
        location.hash = href(q);
      } }, options.map(function (o) { return el("option", { value: o[0], text: o[1] }); }));
      s.value = value;
      return s;
    };
    var sorts = [["index", "index"], ["density", "density"], ["max", "max activation"], ["effect", "effect size"]];
    if (summary.match) sorts.push(["match", "concept match"]);
    var conceptNames = summary.concepts ? summary.concepts.filter(function (c, i, a) { return c && a.indexOf(c) === i; }).sort() : [];
    var filters = [["all", "all features"], ["live", "live only"], ["dead", "dead only"]];
    // match 0.8 = AUROC 0.9 (or |Spearman| 0.8): the coverage threshold
    if (summary.match) filters.push(["strong", "concept match ≥ " + STRONG]);
    var controls = el("div", { class: "controls" }, jumpBox(entry, summary),
      el("label", { text: "Sort " }), select("sort", r.sort, sorts, "sort"),
      el("label", { text: " Show " }), select("filter", r.filter, filters, "filter"),
      summary.concepts ? [el("label", { text: " Best concept " }), select("concept", r.concept,
        [["", "any"]].concat(conceptNames.map(function (c) { return [c, c]; })), "concept")] : null,
      summary.scores ? scoreFilter(summary, entry, r, select) : null);
    var q = { sae: entry.id, sort: r.sort, filter: r.filter, concept: r.concept, score: r.score, min: r.min };
    var at = function (pg) { var o = Object.assign({}, q); o.page = pg; return href(o); };

    var rows = idx.slice(page * PAGE, (page + 1) * PAGE).map(function (i) {
      var d = summary.density[i];
      return el("tr", { class: d === 0 ? "dead" : null },
        el("td", null, el("a", { href: href({ sae: entry.id, f: i }), class: "feat-link", text: "#" + i })),
        el("td", { text: d === 0 ? "dead" : "live", class: d === 0 ? "dead-label" : null }),
        el("td", { text: pct(d) }), el("td", { text: fmt(summary.max[i]) }),
        el("td", { text: fmt(summary.effect[i]) }),
        summary.match ? el("td", { class: "match", text: fmt(summary.match[i]) }) : null,
        r.score && summary.scores ? el("td", { class: "expl-score", text: fmt((summary.scores[r.score] || [])[i]) }) : null,
        el("td", { class: "label", text: summary.labels ? summary.labels[i] || "" : "" }));
    });
    var cols = ["feature", "status", "density", "max act", "effect"];
    if (summary.match) cols.push("match");
    if (r.score && summary.scores) cols.push(r.score);
    cols.push(summary.labels ? "explanation" : "");
    var head = el("tr", null, cols.map(function (c) { return el("th", { text: c }); }));
    var pager = el("div", { class: "pager" },
      page > 0 ? el("a", { href: at(page - 1), text: "← previous" }) : null,
      el("span", { text: " page " + (page + 1) + " of " + pages + " (" + idx.length + " features) " }),
      page + 1 < pages ? el("a", { href: at(page + 1), text: "next →" }) : null);
    var m = entry.metrics || {};
    show([
      el("h1", { text: entry.name }),
      el("p", { class: "muted", text: entry.kind + " SAE · " + n + " features · " + (n - dead) + " live · " + dead +
        " dead · L0 " + fmt(m.l0) + " · FVU " + fmt(m.fvu) + " · " + fmt(summary.rows) + " rows · effect = " + summary.effect_label +
        (entry.concept_coverage !== undefined && entry.concept_coverage !== null ? " · concept coverage " + pct(entry.concept_coverage) : "") }),
      (entry.notes || []).map(function (t) { return el("p", { class: "note", text: t }); }),
      el("h2", { text: "Feature densities" }), densityHistogram(summary.density),
      controls, el("table", { class: "grid-table", id: "feature-table" }, el("thead", null, head), el("tbody", null, rows)), pager,
    ], [" › ", el("a", { href: href({ sae: entry.id }), text: entry.name })]);
  }

  // explanation scores on held-out contexts (detection, fuzzing, simulation), per feature
  function scoreAtLeast(summary, method, i, min) {
    var v = summary.scores && summary.scores[method] ? summary.scores[method][i] : null;
    return v !== null && v !== undefined && !isNaN(min) && v >= min;
  }

  function scoreFilter(summary, entry, r, select) {
    var methods = ["detection", "fuzzing", "simulation"].filter(function (m) { return summary.scores[m]; });
    var min = el("input", { id: "score-min", type: "number", step: "0.05", min: -1, max: 1, value: r.min,
      onchange: function () {
        location.hash = href({ sae: entry.id, sort: r.sort, filter: r.filter, concept: r.concept, score: r.score, min: min.value });
      } });
    return [el("label", { text: " Explanation score " }),
      select("score", r.score, [["", "any"]].concat(methods.map(function (m) { return [m, m]; })), "score"),
      el("label", { for: "score-min", text: " ≥ " }), min];
  }

  function densityHistogram(density) {
    var live = density.filter(function (d) { return d > 0; }).map(function (d) { return Math.log10(d); });
    var dead = density.length - live.length;
    var bins = 24, lo = live.length ? Math.min.apply(null, live) : -6, hi = 0;
    if (hi - lo < 1) lo = hi - 1;
    var counts = new Array(bins).fill(0);
    live.forEach(function (v) { counts[Math.min(bins - 1, Math.floor((v - lo) / (hi - lo) * bins))]++; });
    var edges = counts.map(function (_, i) { return lo + (i * (hi - lo)) / bins; });
    return barChart(counts, edges, (hi - lo) / bins, {
      xlabel: "log10 firing density", extra: ["dead", dead], id: "density-hist",
      tick: function (v) { return fmt(v, 2); },
    });
  }

  function barChart(counts, edges, width, o) {
    var W = 560, H = 170, padL = 44, padB = 34, padT = 10;
    var n = counts.length + (o.extra ? 2 : 0);
    var top = Math.max.apply(null, counts.concat(o.extra ? [o.extra[1]] : []).concat([1]));
    var bw = (W - padL - 10) / n;
    var g = svg("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, class: "chart", id: o.id || "" });
    g.appendChild(svg("line", { x1: padL, y1: H - padB, x2: W - 5, y2: H - padB, stroke: "#888" }));
    g.appendChild(svg("text", { x: padL - 4, y: padT + 8, "text-anchor": "end", class: "tick", text: top }));
    g.appendChild(svg("text", { x: padL - 4, y: H - padB, "text-anchor": "end", class: "tick", text: 0 }));
    counts.forEach(function (c, i) {
      var h = ((H - padB - padT) * c) / top;
      var rect = svg("rect", { x: padL + i * bw + 1, y: H - padB - h, width: Math.max(1, bw - 2), height: h, class: "bar" });
      rect.appendChild(svg("title", { text: o.tick(edges[i]) + " – " + o.tick(edges[i] + width) + ": " + c }));
      g.appendChild(rect);
    });
    [0, Math.floor(counts.length / 2), counts.length].forEach(function (i) {
      var v = i < counts.length ? edges[i] : edges[counts.length - 1] + width;
      g.appendChild(svg("text", { x: padL + i * bw, y: H - padB + 14, "text-anchor": "middle", class: "tick", text: o.tick(v) }));
    });
    if (o.extra) {
      var c = o.extra[1], h = ((H - padB - padT) * c) / top, x = padL + (counts.length + 1) * bw;
      var rect = svg("rect", { x: x + 1, y: H - padB - h, width: Math.max(1, bw - 2), height: h, class: "bar dead-bar" });
      rect.appendChild(svg("title", { text: o.extra[0] + ": " + c }));
      g.appendChild(rect);
      g.appendChild(svg("text", { x: x + bw / 2, y: H - padB + 14, "text-anchor": "middle", class: "tick", text: o.extra[0] + " " + c }));
    }
    g.appendChild(svg("text", { x: padL + (W - padL) / 2, y: H - 4, "text-anchor": "middle", class: "axis", text: o.xlabel }));
    return g;
  }

  // ---- feature page ----------------------------------------------------------------------
  function renderFeature(entry, summary, ft) {
    var f = ft.i;
    var nav = el("div", { class: "controls" },
      f > 0 ? el("a", { href: href({ sae: entry.id, f: f - 1 }), id: "prev", text: "← #" + (f - 1) }) : null, " ",
      f + 1 < summary.d_sae ? el("a", { href: href({ sae: entry.id, f: f + 1 }), id: "next", text: "#" + (f + 1) + " →" }) : null,
      jumpBox(entry, summary));
    var stats = el("dl", { class: "stats" },
      el("dt", { text: "firing rate" }), el("dd", { id: "firing-rate", text: pct(ft.density) + " (" + ft.count + " of " + fmt(summary.rows) + " rows)" }),
      el("dt", { text: "max activation" }), el("dd", { text: fmt(ft.max) }),
      el("dt", { text: "mean when firing" }), el("dd", { text: fmt(ft.mean) }),
      el("dt", { text: "effect size" }), el("dd", { text: fmt(ft.effect) + " (" + summary.effect_label + ")" }));
    var parts = [el("h1", { id: "feature-title", text: entry.name + " · feature #" + f }), nav];
    if (ft.dead) {
      parts.push(el("p", { class: "dead-banner", id: "dead-banner",
        text: "Dead feature: it never fired on the " + fmt(summary.rows) + " rows of the activation store." }));
    }
    if (ft.explanation) parts.push(explanationBox(ft.explanation));
    if (ft.concepts) parts.push(conceptsBox(ft.concepts));
    if (ft.intervention) parts.push(interventionBox(entry, ft.intervention));
    if (ft.pairs) parts.push(pairBox(ft.pairs));
    parts.push(el("div", { class: "row" }, stats, ft.dead ? null : el("div", null, el("h3", { text: "Activation histogram (firing rows)" }),
      barChart(ft.hist, ft.hist.map(function (_, i) { return (i * ft.max) / ft.hist.length; }), ft.max / ft.hist.length,
        { xlabel: "activation", id: "act-hist", tick: function (v) { return fmt(v, 2); } }))));
    if (ft.logits) parts.push(logitsBox(ft.logits));
    if (!ft.dead) {
      if (entry.kind === "agent") parts.push(agentStates(entry, ft));
      else if (entry.kind === "lm") parts.push(lmContexts(ft));
      else parts.push(genericRows(ft));
    }
    parts.push(el("h2", { text: "Most similar features (decoder cosine)" }),
      el("ul", { class: "neighbours" }, ft.neighbours.map(function (nb) {
        return el("li", null, el("a", { href: href({ sae: entry.id, f: nb[0] }), text: "#" + nb[0] }),
          " cos " + fmt(nb[1]) + (summary.density[nb[0]] === 0 ? " (dead)" : ""));
      })));
    show(parts, [" › ", el("a", { href: href({ sae: entry.id }), text: entry.name }), " › #" + f]);
  }

  function conceptsBox(cs) {
    var head = el("tr", null, ["concept", "score", "match", "F1", "threshold"].map(function (c) { return el("th", { text: c }); }));
    var rows = cs.map(function (c) {
      var score = c.score === null || c.score === undefined ? "n/a" : (c.kind === "bool" ? "AUROC " : "Spearman ") + fmt(c.score);
      return el("tr", { class: "concept" },
        el("td", { class: "concept-name", text: (c.negated ? "NOT " : "") + c.concept }),
        el("td", { text: score }), el("td", { text: fmt(c.strength) }),
        el("td", { text: c.f1 === undefined ? "" : fmt(c.f1) }),
        el("td", { text: c.threshold === undefined ? "" : "≥ " + fmt(c.threshold) }));
    });
    return el("section", { id: "concepts" }, el("h2", { text: "Game-state concepts (from the emulator's RAM)" }),
      el("table", { class: "grid-table concepts" }, el("thead", null, head), el("tbody", null, rows)));
  }

  function explanationBox(e) {
    return el("div", { class: "explanation", id: "explanation" },
      el("strong", { text: "Explanation: " }), el("span", { class: "expl-text", text: e.explanation || "" }),
      e.utility !== undefined && e.utility !== null ? el("span", { class: "muted", text: " · utility score " + fmt(e.utility) }) : null,
      e.method ? el("span", { class: "muted", text: " · " + e.method }) : null,
      e.scorer ? el("div", { class: "muted expl-scores", text: "held-out scores: detection " + fmt(e.detection) +
        " · fuzzing " + fmt(e.fuzzing) + " · simulation " + fmt(e.simulation) + " (scorer: " + e.scorer + ")" }) : null);
  }

  function pairBox(pairs) {
    return el("section", { id: "pairs" }, el("h2", { text: "Shared features (dictionary pairs)" }),
      el("ul", null, pairs.map(function (p, i) {
        var label = (p.other_name || "other SAE") + " #" + p.feature;
        var link = p.other ? el("a", { href: href({ sae: p.other, f: p.feature }), class: "pair-link", text: label })
          : el("span", { text: label });
        return el("li", null, el("span", { class: "muted", text: p.kind + ": " }), link, " (cosine " + fmt(p.cosine) + ")");
      })));
  }

  function logitsBox(lg) {
    var list = function (title, items, cls) {
      return el("div", null, el("h3", { text: title }), el("ol", { class: "tokens " + cls }, items.map(function (t) {
        return el("li", null, el("code", { class: "tok", text: t[0] }), " " + fmt(t[1]));
      })));
    };
    return el("section", null, el("h2", { text: "Logit effect of the decoder direction (through the unembedding)" }),
      el("div", { class: "row" }, list("promoted", lg.promoted, "pos"), list("suppressed", lg.suppressed, "neg")));
  }

  var ARROWS = ["↖", "↑", "↗", "←", "·", "→", "↙", "↓", "↘"];
  var GRID_LABELS = ["up-left", "up", "up-right", "left", "noop", "right", "down-left", "down", "down-right"];

  function signedColour(v, m) {
    var t = m > 0 ? Math.min(1, Math.abs(v) / m) : 0;
    var grey = [200, 200, 200], tgt = v >= 0 ? [214, 39, 40] : [31, 119, 180];
    var c = grey.map(function (g, i) { return Math.round(g + (tgt[i] - g) * t); });
    return "rgb(" + c.join(",") + ")";
  }

  // joystick games: 3x3 (NOOP centre) or 3x6 (the same with the button on the right);
  // any other action set: one row of values in action order, drawn as labelled bars
  function effectGrid(grid, m, actions) {
    if (grid.length === 1) return effectBars(grid[0], m, actions);
    var rows = grid.map(function (line, i) {
      return el("tr", null, line.map(function (v, c) {
        var j = c % 3, fire = c >= 3 ? " + fire" : "";
        return el("td", { style: { background: signedColour(v, m) }, title: GRID_LABELS[i * 3 + j] + fire + ": " + v },
          el("span", { class: "arrow", text: ARROWS[i * 3 + j] + (fire ? "•" : "") }), el("br"), el("span", { text: fmt(v, 2) }));
      }));
    });
    return el("table", { class: "effect-grid" }, el("tbody", null, rows));
  }

  function effectBars(values, m, actions) {
    var rows = values.map(function (v, a) {
      var w = m > 0 ? Math.round(60 * Math.min(1, Math.abs(v) / m)) : 0;
      return el("tr", null, el("td", { class: "small", text: actions && actions[a] ? actions[a] : String(a) }),
        el("td", null, el("span", { class: "effect-bar", title: v, style: { display: "inline-block", height: "0.8em", width: w + "px", background: signedColour(v, m) } })),
        el("td", { class: "small", text: fmt(v, 2) }));
    });
    return el("table", { class: "effect-bars" }, el("tbody", null, rows));
  }

  function agentStates(entry, ft) {
    var m = 0;
    ft.top.forEach(function (s) { (s.grid || []).forEach(function (r) { r.forEach(function (v) { m = Math.max(m, Math.abs(v)); }); }); });
    var cards = ft.top.map(function (s, k) {
      var act = entry.actions && s.action !== undefined ? entry.actions[s.action] || s.action : s.action;
      return el("figure", { class: "state" },
        el("div", { class: "frames" },
          s.frame ? el("span", { class: "frame-wrap" }, el("img", { src: s.frame, alt: "state", class: "frame", width: 160, height: 210 }),
            s.saliency ? el("img", { src: s.saliency, alt: "saliency", class: "saliency", width: 160, height: 210, title: "saliency: gradient × input of the feature's activation" }) : null)
            : el("div", { class: "noframe", text: "no frame" }),
          s.clip ? el("img", { src: s.clip, alt: "clip", class: "clip", width: 160, height: 210, title: "clip: " + entry.clip.before + " steps before to " + entry.clip.after + " after" }) : null),
        el("figcaption", null,
          el("strong", { text: "#" + (k + 1) + " act " + fmt(s.act) }),
          el("br"), "episode " + s.episode + " · step " + s.step + (act !== undefined ? " · action " + act : ""),
          s.clip_acts ? el("div", { class: "muted small", text: "clip activations: " + s.clip_acts.map(function (v) { return v === null ? "–" : fmt(v, 2); }).join(" ") }) : null),
        s.grid ? effectGrid(s.grid, m, entry.actions) : null);
    });
    var salient = ft.top.filter(function (s) { return s.saliency; }).length;
    var section = el("section", { id: "states-section" });
    var toggle = salient ? el("label", { class: "saliency-toggle" }, el("input", { type: "checkbox", id: "saliency-toggle",
      onchange: function (ev) { section.classList.toggle("show-saliency", ev.target.checked); } }),
      " show where the feature looks (saliency overlay on " + salient + " of " + ft.top.length + " frames)") : null;
    add(section, [el("h2", { text: "Top " + ft.top.length + " states (distinct episodes)" }), toggle,
      el("p", { class: "muted", text: "Replayed frame and a clip around it; the grid is the feature's effect on each action (joystick games: 3×3 with NOOP in the centre, the button's 3×3 beside it; other games: one bar per action): red raises, blue lowers, grey is zero; scale max |Δ| = " + fmt(m) + "." }),
      el("div", { class: "states" }, cards)]);
    return section;
  }

  function actionName(entry, a) {
    return entry.actions && entry.actions[a] !== undefined ? entry.actions[a] : String(a);
  }

  function interventionBox(entry, iv) {
    var what = iv.kind === "ablation" ? "set to zero" : "steered";
    var stats = el("dl", { class: "stats" },
      el("dt", { text: "Δ mean return" }), el("dd", { class: "delta-return", text: (iv.delta_return > 0 ? "+" : "") + fmt(iv.delta_return) }),
      el("dt", { text: "95% interval" }), el("dd", { class: "delta-ci", text: "[" + fmt(iv.ci[0]) + ", " + fmt(iv.ci[1]) + "]" }),
      el("dt", { text: "spliced return" }), el("dd", { text: fmt(iv.return_base) + " over " + iv.episodes + " episodes" }),
      el("dt", { text: "greedy action changed" }), el("dd", { class: "greedy-changed", text: pct(iv.greedy_changed) + " of states" +
        (iv.greedy_changed_firing !== null && iv.greedy_changed_firing !== undefined ? " (" + pct(iv.greedy_changed_firing) + " where it fires, " + iv.states_firing + " states)" : "") }),
      el("dt", { text: "action shift (TV)" }), el("dd", { class: "action-tv", text: fmt(iv.action_tv) }),
      iv.rank ? [el("dt", { text: "rank by |Δ return|" }), el("dd", { class: "rank", text: iv.rank + " of " + iv.swept + " features swept" })] : null);
    var c = iv.changed, changed;
    if (c) {
      changed = el("figure", { class: "state changed-state" },
        el("div", { class: "frames" },
          c.frame ? el("img", { src: c.frame, alt: "state", class: "frame", width: 160, height: 210 }) : el("div", { class: "noframe", text: "no frame" }),
          c.clip ? el("img", { src: c.clip, alt: "clip", class: "clip", width: 160, height: 210 }) : null),
        el("figcaption", { class: "changed-caption", text: "Where the greedy action changed most: episode " + c.episode + " · step " + c.step +
          " · " + actionName(entry, c.action_before) + " → " + actionName(entry, c.action_after) + " (preference shift " + fmt(c.shift) + ")" }));
    } else {
      changed = el("p", { class: "muted changed-state", text: "The greedy action never changed." });
    }
    return el("section", { id: "intervention" },
      el("h2", { text: "In play: the agent with this feature " + what }),
      el("p", { class: "muted", text: "Against the spliced agent on the same seeded episodes (" + iv.source + ")." }),
      el("div", { class: "row" }, stats, changed));
  }

  function contextLine(c, max) {
    var toks = (c.tokens || []).map(function (t) {
      var a = max > 0 ? Math.max(0, t[1]) / max : 0;
      return el("span", { class: "tok" + (t[2] ? " focus" : ""), title: "activation " + fmt(t[1]),
        style: { background: "rgba(255,140,0," + (a * 0.85).toFixed(3) + ")" }, text: t[0] });
    });
    return el("div", { class: "context" }, el("span", { class: "ctx-act", text: fmt(c.act, 2) }),
      el("span", { class: "ctx-meta muted", text: c.doc !== null && c.doc !== undefined ? "doc " + c.doc + " " : "" }), toks);
  }

  function lmContexts(ft) {
    var parts = [el("h2", { text: "Top " + ft.top.length + " contexts (distinct documents)" }),
      el("div", { class: "contexts", id: "top-contexts" }, ft.top.map(function (c) { return contextLine(c, ft.max); }))];
    (ft.intervals || []).forEach(function (iv) {
      parts.push(el("h3", { text: "Samples from activations in (" + iv.lo * 100 + "%, " + iv.hi * 100 + "%] of the max" }));
      parts.push(iv.samples.length ? el("div", { class: "contexts" }, iv.samples.map(function (c) { return contextLine(c, ft.max); }))
        : el("p", { class: "muted", text: "none in this interval" }));
    });
    return el("section", null, parts);
  }

  function genericRows(ft) {
    return el("section", null, el("h2", { text: "Top rows" }), el("table", { class: "grid-table" },
      el("tbody", null, ft.top.map(function (t) {
        return el("tr", null, el("td", { text: "row " + t.row }), el("td", { text: fmt(t.act) }),
          el("td", { text: t.context ? JSON.stringify(t.context) : "" }));
      }))));
  }

  render();
})();
