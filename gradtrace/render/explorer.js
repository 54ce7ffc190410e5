/* gradtrace explorer: the page's behaviour. Plain JS, no framework, no network request
   (except in `gradtrace serve` mode, where steps come from the same local server). */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("gt-data").textContent);
  var S = (function (cols) {   // one list per field -> one object per step
    var keys = Object.keys(cols), n = keys.length ? cols[keys[0]].length : 0, rows = [];
    for (var i = 0; i < n; i++) {
      var r = {};
      keys.forEach(function (k) { r[k] = cols[k][i]; });
      rows.push(r);
    }
    return rows;
  })(D.scalars), N = S.length;
  var SVGNS = "http://www.w3.org/2000/svg";
  var $ = function (id) { return document.getElementById(id); };
  var state = { pos: 0, node: null, bw: -1, line: null, playing: null, bwPlaying: null };
  var cache = {};              // step index -> step data
  var shapes = D.shapes;       // shape id -> geometry
  var posOf = {};              // step index -> position in S
  S.forEach(function (r, i) { posOf[r.index] = i; });
  Object.keys(D.steps).forEach(function (k) { cache[k] = D.steps[k]; });
  var held = D.held;
  var values = D.values || [];  // each distinct value once; a held step's nodes refer to them
  function value(v) {          // by number; a step fetched from `gradtrace serve` has them inline
    v = typeof v === "number" ? values[v] : v;
    if (v && !v.values && (v.f4 || v.f8)) v.values = unpack(v.f4 || v.f8, v.f4 ? 4 : 8);
    return v;
  }
  function unpack(b64, width) { // little-endian float32 / float64 bytes -> the numbers JSON would carry
    var bin = atob(b64), bytes = new Uint8Array(bin.length), out = [];
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    var view = new DataView(bytes.buffer);
    for (var j = 0; j < bytes.length; j += width) {
      var x = width === 4 ? view.getFloat32(j, true) : view.getFloat64(j, true);
      out.push(isNaN(x) ? "nan" : x === Infinity ? "inf" : x === -Infinity ? "-inf" : x);
    }
    return out;
  }

  function num(x) {            // numbers as JSON carries them ("nan", "inf" as strings)
    if (x === null || x === undefined) return "";
    return String(x);
  }
  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function sv(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    if (attrs) Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function css(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }
  function finite(x) { return typeof x === "number" && isFinite(x); }

  /* ---------- steps: held, fetched (serve) or missing ---------- */
  function nearestHeld(index) {
    var best = null;
    held.forEach(function (h) { if (best === null || Math.abs(h - index) < Math.abs(best - index)) best = h; });
    return best;
  }
  function heldAround(index) {  // the held steps just before and after a step
    var before = null, after = null;
    held.forEach(function (h) {
      if (h < index && (before === null || h > before)) before = h;
      if (h > index && (after === null || h < after)) after = h;
    });
    return [before, after].filter(function (h) { return h !== null; });
  }
  function withStep(index, done) {
    if (cache[index]) return done(cache[index], false);
    if (D.mode === "serve" && S[posOf[index]] && S[posOf[index]].recorded) {
      $("graph-note").textContent = "Loading step " + index + "\u2026";
      fetch("steps/" + index + ".json").then(function (r) {
        if (!r.ok) throw new Error("the server answered " + r.status);
        return r.json();
      }).then(function (d) {
        if (d.geometry) { shapes[String(d.shape)] = d.geometry; delete d.geometry; }
        cache[index] = d;
        if (S[state.pos].index === index) done(d, false);
      }).catch(function (e) { $("graph-note").textContent = "Step " + index + " could not be loaded: " + e.message; });
      return;
    }
    var near = nearestHeld(index);
    done(near === null ? null : cache[near], true);
  }

  /* ---------- the scrubber ---------- */
  var slider = $("slider");
  slider.max = Math.max(0, N - 1);
  function go(pos, keepNode) {
    if (!N) return;
    pos = Math.max(0, Math.min(N - 1, pos));
    state.pos = pos;
    slider.value = pos;
    var r = S[pos];
    $("step-label").textContent = "step " + r.index + " (" + (pos + 1) + " of " + N + ")" +
      (r.loss !== null ? " \u00b7 loss " + r.loss_text : "");
    if (!keepNode) { state.bw = -1; }
    drawCurves();
    withStep(r.index, function (d, stale) { showStep(r, d, stale); });
  }
  function showStep(r, d, stale) {
    $("graph-step").textContent = String(r.index);
    $("source-step").textContent = String(r.index);
    var noteEl = $("graph-note");
    noteEl.textContent = "";
    noteEl.classList.toggle("stale", !!stale);
    if (stale) {
      noteEl.textContent = d ? "Step " + r.index + "'s values are not on this page: dimmed, the graph of step " + d.index +
        ", the nearest step it holds (`gradtrace serve` shows every step)." : "No step of this run is on this page.";
      heldAround(r.index).forEach(function (h) {
        var b = el("button", { type: "button" }, "go to step " + h);
        b.addEventListener("click", function () { go(posOf[h]); });
        noteEl.appendChild(b);
      });
    } else if (d && d.note) { noteEl.textContent = d.note; }
    $("graph").classList.toggle("stale", !!stale);
    drawGraph(d);
    drawSource(stale ? null : d);
    drawBackward(stale ? null : d);
    var n = state.node;
    if (stale) inspect("stale", null, false);
    else inspect(n !== null && d && d.nodes[n] ? n : null, d, false);
  }
  $("first").onclick = function () { go(0); };
  $("last").onclick = function () { go(N - 1); };
  $("prev").onclick = function () { go(state.pos - 1); };
  $("next").onclick = function () { go(state.pos + 1); };
  slider.addEventListener("input", function () { go(parseInt(slider.value, 10)); });
  function play(on) {
    var b = $("play");
    if (state.playing) { clearInterval(state.playing); state.playing = null; }
    if (on) {
      if (state.pos >= N - 1) go(0);
      state.playing = setInterval(function () {
        if (state.pos >= N - 1) { play(false); return; }
        go(state.pos + 1, true);
      }, Math.max(60, Math.min(500, 20000 / Math.max(1, N))));
    }
    b.setAttribute("aria-pressed", on ? "true" : "false");
    b.textContent = on ? "\u23f8 pause" : "\u25b6 play";
  }
  $("play").onclick = function () { play(!state.playing); };
  $("jump").addEventListener("change", function () {
    var v = this.value;
    if (v !== "") { openItem(JSON.parse(v)); }
    this.value = "";
  });
  document.addEventListener("keydown", function (ev) {
    var t = ev.target, tag = (t && t.tagName || "").toLowerCase();
    if (tag === "input" || tag === "select" || tag === "textarea") return;
    if (ev.key === "ArrowLeft") { go(state.pos - 1, true); ev.preventDefault(); }
    else if (ev.key === "ArrowRight") { go(state.pos + 1, true); ev.preventDefault(); }
    else if (ev.key === "Home") { go(0); ev.preventDefault(); }
    else if (ev.key === "End") { go(N - 1); ev.preventDefault(); }
    else if ((ev.key === " " || ev.key === "p") && tag !== "button" && tag !== "a") { play(!state.playing); ev.preventDefault(); }
  });

  /* ---------- loss curve and timeline (canvas: cheap for 30,000 steps) ---------- */
  var lossCv = $("loss-canvas"), tlCv = $("timeline-canvas");
  var PAD = 96;  // room for the row names on the left
  function xOf(pos, w) { return PAD + (N <= 1 ? 0 : pos * (w - PAD - 8) / (N - 1)); }
  function posAt(x, w) { return Math.round((x - PAD) * (N - 1) / Math.max(1, w - PAD - 8)); }
  function sizeCanvas(cv) {
    var ratio = window.devicePixelRatio || 1, w = cv.clientWidth, h = cv.clientHeight;
    if (cv.width !== Math.round(w * ratio) || cv.height !== Math.round(h * ratio)) {
      cv.width = Math.round(w * ratio); cv.height = Math.round(h * ratio);
    }
    var c = cv.getContext("2d");
    c.setTransform(ratio, 0, 0, ratio, 0, 0);
    c.clearRect(0, 0, w, h);
    c.font = "12px " + css("--gt-font");
    return { c: c, w: w, h: h };
  }
  var lossInfo = (function () {
    var vals = S.map(function (r) { return r.loss; }).filter(finite);
    var pos = vals.length && vals.every(function (v) { return v > 0; });
    var lo = Math.min.apply(null, vals.length ? vals : [0]), hi = Math.max.apply(null, vals.length ? vals : [1]);
    var log = pos && hi / lo > 100;
    var text = function (v) { var r = S.filter(function (x) { return x.loss === v; })[0]; return r ? r.loss_text : ""; };
    return { log: log, hiText: text(hi), loText: text(lo), lo: log ? Math.log10(lo) : lo, hi: log ? Math.log10(hi) : hi, any: vals.length > 0 };
  })();
  function drawCurves() {
    var g = sizeCanvas(lossCv), c = g.c;
    c.fillStyle = css("--gt-muted");
    c.fillText("loss" + (lossInfo.log ? " (log)" : ""), 4, 14);
    if (lossInfo.any) {
      c.fillText(lossInfo.hiText, 4, 28);
      c.fillText(lossInfo.loText, 4, g.h - 4);
    }
    var span = (lossInfo.hi - lossInfo.lo) || 1;
    c.strokeStyle = css("--gt-series-0"); c.lineWidth = 1.5; c.beginPath();
    var started = false, lastX = -1;
    S.forEach(function (r, i) {
      if (!finite(r.loss) || (lossInfo.log && r.loss <= 0)) { started = false; return; }
      var x = xOf(i, g.w);
      if (N > 4 * g.w && Math.abs(x - lastX) < 0.25) return;  // a point per quarter pixel is plenty
      lastX = x;
      var v = lossInfo.log ? Math.log10(r.loss) : r.loss;
      var y = 6 + (g.h - 12) * (1 - (v - lossInfo.lo) / span);
      if (started) c.lineTo(x, y); else { c.moveTo(x, y); started = true; }
    });
    c.stroke();
    c.fillStyle = css("--gt-bad");
    S.forEach(function (r, i) {  // a loss that is nan or inf: a mark at the top, and words in the label
      if (r.loss !== null && !finite(r.loss)) c.fillRect(xOf(i, g.w) - 1, 2, 3, 8);
    });
    marker(c, g);
    var t = sizeCanvas(tlCv), tc = t.c;
    var rows = [["zeroed", "zeroings", "--gt-event-zero"], ["into .grad", "accum_ok", "--gt-event-fresh"],
                ["on top (!)", "accumulate_on_top", "--gt-event-added"], ["updated", "updates", "--gt-event-update"]];
    var rh = (t.h - 4) / rows.length;
    rows.forEach(function (row, j) {
      tc.fillStyle = css("--gt-subtle");
      tc.fillText(row[0], 4, 2 + rh * j + rh / 2 + 4);
      tc.fillStyle = css(row[2]);
      var w = Math.max(1, Math.min(6, (t.w - PAD) / Math.max(1, N) - 1));
      S.forEach(function (r, i) {
        var v = row[1] === "accum_ok" ? (r.accumulate_fresh + r.accumulate_added - r.accumulate_on_top) : r[row[1]];
        if (v > 0) tc.fillRect(xOf(i, t.w) - w / 2, 2 + rh * j + 2, w, rh - 4);
      });
    });
    marker(tc, t);
  }
  function marker(c, g) {
    var x = xOf(state.pos, g.w);
    c.strokeStyle = css("--gt-ink"); c.lineWidth = 2;
    c.beginPath(); c.moveTo(x, 0); c.lineTo(x, g.h); c.stroke();
  }
  [lossCv, tlCv].forEach(function (cv) {
    cv.addEventListener("click", function (ev) {
      var r = cv.getBoundingClientRect();
      go(posAt(ev.clientX - r.left, r.width));
    });
  });
  window.addEventListener("resize", function () { drawCurves(); });

  /* ---------- the graph ---------- */
  var svg = $("graph-svg");
  var drawnShape = null;
  var FONT = 13, SMALL = 10;
  function drawGraph(d) {
    var shapeId = d ? d.shape : null;
    var geo = shapeId === null || shapeId === undefined ? null : shapes[String(shapeId)];
    if (!geo) { svg.innerHTML = ""; drawnShape = null; return; }
    if (drawnShape !== String(shapeId)) {
      svg.innerHTML = "";
      svg.setAttribute("viewBox", "-4 -4 " + (geo.width + 8) + " " + (geo.height + 8));
      var defs = sv("defs");
      svg.appendChild(defs);
      geo.clusters.forEach(function (cl) {
        svg.appendChild(sv("rect", { "class": "cluster", x: cl.x, y: cl.y, width: cl.w, height: cl.h, rx: 8 }));
        svg.appendChild(sv("text", { "class": "cluster-label", x: cl.x + 6, y: cl.y + 12 }, cl.label));
      });
      geo.edges.forEach(function (e) {
        var g = sv("g", { "class": "edge " + e.kind, "data-from": e.from, "data-to": e.to });
        g.appendChild(sv("path", { d: e.path }));
        e.arrows.forEach(function (a) {
          var tip = a[0], from = a[1], dx = tip[0] - from[0], dy = tip[1] - from[1];
          var len = Math.sqrt(dx * dx + dy * dy) || 1, ux = dx / len, uy = dy / len, s = 4;
          var bx = tip[0] - ux * 9, by = tip[1] - uy * 9;
          g.appendChild(sv("polygon", { points: tip[0] + "," + tip[1] + " " + (bx - uy * s) + "," + (by + ux * s) + " " + (bx + uy * s) + "," + (by - ux * s) }));
        });
        if (e.label) g.appendChild(sv("text", { x: e.label_at[0], y: e.label_at[1] + 3, "text-anchor": "middle", "class": "edge-label" }, e.label));
        svg.appendChild(g);
      });
      Object.keys(geo.nodes).forEach(function (k) {
        var n = geo.nodes[k];
        var g = sv("g", { "class": "node kind-" + n.kind, id: "node-" + k, tabindex: "0", role: "button",
          "data-node": k, "aria-label": n.title + " " + n.shape });
        var rounded = (n.kind === "param" || n.kind === "input") ? 0 : 6;
        g.appendChild(sv("rect", { x: n.x + 1, y: n.y + 1, width: Math.max(1, n.w - 2), height: Math.max(1, n.h - 2), rx: rounded }));
        g.appendChild(sv("g", { "class": "content" }));
        g.addEventListener("click", function () { select(k); });
        g.addEventListener("keydown", function (ev) { if (ev.key === "Enter" || ev.key === " ") { select(k); ev.preventDefault(); } });
        svg.appendChild(g);
      });
      drawnShape = String(shapeId);
    }
    Object.keys(geo.nodes).forEach(function (k) { fillNode(k, geo.nodes[k], d.nodes[k]); });
    markNodes();
  }
  function fillNode(k, n, v) {
    var g = $("node-" + k), box = g.querySelector(".content");
    box.innerHTML = "";
    var x = n.x + 6, y = n.y + 6 + FONT, right = n.x + n.w - 6;
    var head = sv("text", { x: n.x + n.w / 2, y: y, "text-anchor": "middle", "class": "title" });
    var title = v && v.title ? v.title : n.title;  // a step's own title of an input named by its id
    g.setAttribute("aria-label", title + " " + n.shape);
    head.appendChild(sv("tspan", { "font-weight": "bold" }, title));
    if (n.shape) head.appendChild(sv("tspan", { "class": "muted small", dx: 6 }, n.shape));
    box.appendChild(head);
    n.details.forEach(function (t) {
      y += SMALL + 4;
      box.appendChild(sv("text", { x: n.x + n.w / 2, y: y, "text-anchor": "middle", "class": "muted small" }, t));
    });
    var cells = v ? v.cells : [];
    if (!cells.length) { fit(g, n); return; }
    y += 5;
    box.appendChild(sv("line", { x1: n.x + 2, x2: n.x + n.w - 2, y1: y, y2: y, "class": "rule" }));
    if (cells.every(function (c) { return c.matrix; })) {
      var widths = cells.map(function (c) {
        var cols = c.rows[0].length, w = [];
        for (var j = 0; j < cols; j++) w.push(Math.max.apply(null, c.rows.map(function (r) { return r[j].length; })));
        return w;
      });
      // monospace digits, as graphviz sized them: a column as wide as its longest number, two
      // spaces between columns, a rule between the data and grad cells (fit() shrinks overflow)
      var cw = 0.602 * FONT, cx = x;
      cells.forEach(function (c, i) {
        var yy = y + SMALL + 3;
        if (i > 0) box.appendChild(sv("line", { x1: cx - 5, x2: cx - 5, y1: y, y2: n.y + n.h - 2, "class": "rule" }));
        box.appendChild(sv("text", { x: cx, y: yy, "class": "muted small caption" }, c.caption));
        var colX = cx;
        var colRight = widths[i].map(function (w, j) { colX += (w + (j > 0 ? 2 : 0)) * cw; return colX; });
        c.rows.forEach(function (r) {
          yy += FONT + 4;
          r.forEach(function (t, j) {
            box.appendChild(sv("text", { x: colRight[j], y: yy, "text-anchor": "end", "class": "mono " + c.kind }, t));
          });
        });
        cx = Math.max(colX, cx + c.caption.length * 0.55 * SMALL) + 10;
      });
    } else {
      cells.forEach(function (c) {
        y += 3;
        var yy = y + SMALL + 2;
        box.appendChild(sv("text", { x: x, y: yy, "class": "muted small caption" }, c.caption));
        c.rows.forEach(function (r, j) {
          box.appendChild(sv("text", { x: right, y: yy + j * (SMALL + 4), "text-anchor": "end", "class": "small " + c.kind }, r.join(" ")));
        });
        if (c.alert) box.appendChild(sv("text", { x: right, y: yy + c.rows.length * (SMALL + 4), "text-anchor": "end", "class": "small alert" }, c.alert));
        y = yy + (c.rows.length - 1 + (c.alert ? 1 : 0)) * (SMALL + 4) + 4;
        box.appendChild(sv("line", { x1: n.x + 2, x2: n.x + n.w - 2, y1: y, y2: y, "class": "rule thin" }));
      });
    }
    fit(g, n);
  }
  function fit(g, n) {  // numbers wider than the box graphviz made for another step: shrink them
    var box = g.querySelector(".content");
    try {
      var b = box.getBBox();
      var sx = (n.w - 4) / Math.max(1, b.width), sy = (n.h - 4) / Math.max(1, b.height);
      var s = Math.min(1, sx, sy);
      var out = b.x < n.x + 1 || b.x + b.width > n.x + n.w - 1 || b.y < n.y + 1 || b.y + b.height > n.y + n.h - 1;
      if (s < 1 || out) {
        var cx = n.x + n.w / 2, cy = n.y + n.h / 2;
        box.setAttribute("transform", "translate(" + cx + "," + cy + ") scale(" + s + ") translate(" + (-(b.x + b.width / 2)) + "," + (-(b.y + b.height / 2)) + ")");
      } else box.removeAttribute("transform");
    } catch (e) { /* not rendered (print, hidden): leave as drawn */ }
  }
  function markNodes() {
    Array.prototype.forEach.call(svg.querySelectorAll(".node"), function (g) {
      var k = g.getAttribute("data-node");
      g.classList.toggle("selected", k === state.node);
      g.setAttribute("aria-pressed", k === state.node ? "true" : "false");
    });
    var d = current(), order = d ? d.order : [];
    Array.prototype.forEach.call(svg.querySelectorAll(".node"), function (g) {
      g.classList.remove("bw-current", "bw-done", "from-line");
    });
    if (state.bw >= 0 && order[state.bw]) {
      for (var i = 0; i <= state.bw; i++) {
        var o = order[i];
        if (o.node === null) continue;
        var g = $("node-" + o.node);
        if (g) g.classList.add(i === state.bw ? "bw-current" : "bw-done");
      }
    }
    if (state.line && d) {
      Object.keys(d.nodes).forEach(function (k) {
        if (d.nodes[k].source === state.line && $("node-" + k)) $("node-" + k).classList.add("from-line");
      });
    }
  }
  function current() {
    var r = S[state.pos];
    return r ? cache[r.index] || null : null;
  }
  function select(k) {
    state.node = k;
    var d = current();
    inspect(k, d, true);
    markNodes();
  }

  /* ---------- the inspector ---------- */
  function valueBlock(title, v, cls) {
    var box = el("div", { "class": "value " + cls });
    box.appendChild(el("h3", null, title));
    if (!v) { box.appendChild(el("p", { "class": "muted" }, "none")); return box; }
    box.appendChild(el("p", { "class": "muted" }, "shape " + JSON.stringify(v.shape).replace(/,/g, ", ").replace(/^\[/, "(").replace(/\]$/, v.shape.length === 1 ? ",)" : ")") + " \u00b7 " + v.dtype));
    if (v.values) {
      var t = el("table", { "class": "numbers " + cls + "-values" });
      var cols = v.shape.length >= 2 ? v.shape[v.shape.length - 1] : Math.min(v.values.length || 1, 8);
      cols = Math.max(1, cols);
      var tr = null;
      v.values.forEach(function (x, i) {
        if (i % cols === 0) { tr = el("tr"); t.appendChild(tr); }
        tr.appendChild(el("td", null, num(x)));
      });
      var wrap = el("div", { "class": "scroll" }); wrap.appendChild(t); box.appendChild(wrap);
    } else if (v.stats) {
      var st = el("table", { "class": "stats" });
      ["numel", "norm", "mean", "min", "max", "nonfinite"].forEach(function (k) {
        var tr2 = el("tr"); tr2.appendChild(el("th", null, k)); tr2.appendChild(el("td", null, num(v.stats[k]))); st.appendChild(tr2);
      });
      box.appendChild(st);
      box.appendChild(el("p", { "class": "muted" }, "Statistics only: " + v.why + "."));
    }
    return box;
  }
  function inspect(k, d, scroll) {
    var body = $("inspector-body");
    body.innerHTML = "";
    var geo = d && shapes[String(d.shape)];
    if (k === null || !d || !geo || !geo.nodes[k] || !d.nodes[k]) {
      body.appendChild(el("p", { "class": "muted" }, k === null ? "Click a node of the graph (or Tab to it and press Enter) to see its full value and gradient." :
        k === "stale" || !d ? "This step's values are not on this page; its loss and counts are in the curves above." : "This node is not in the graph of this step."));
      return;
    }
    var n = geo.nodes[k], v = d.nodes[k];
    var h = el("p", { "class": "inspected" });
    h.appendChild(el("b", { id: "inspector-title" }, v && v.title ? v.title : n.title));
    h.appendChild(document.createTextNode(" " + n.shape + " \u00b7 " + v.kind_name + " \u00b7 step " + d.index));
    body.appendChild(h);
    var dl = el("dl");
    function row(a, b) { if (b) { dl.appendChild(el("dt", null, a)); dl.appendChild(el("dd", null, b)); } }
    row("grad_fn", v.grad_fn);
    row("options", v.options);
    row("module", n.module);
    if (v.note && v.note.indexOf("backward: ") !== 0) row("note", v.note);
    if (v.source) {
      dl.appendChild(el("dt", null, "line"));
      var dd = el("dd"), a = el("a", { href: "#src-" + lineId(v.source), "class": "to-line" }, shortSource(v.source) + (v.code ? ": " + v.code : ""));
      a.addEventListener("click", function (ev) { ev.preventDefault(); selectLine(v.source, true); });
      dd.appendChild(a); dl.appendChild(dd);
    }
    body.appendChild(dl);
    var vals = el("div", { "class": "values" });
    vals.appendChild(valueBlock("data", value(v.data), "data"));
    if (n.kind !== "input") vals.appendChild(valueBlock("grad", value(v.grad), "grad"));
    body.appendChild(vals);
    if (scroll && window.innerWidth < 900) $("inspector").scrollIntoView({ block: "nearest" });
  }
  function shortSource(key) {
    var i = key.lastIndexOf(":"), f = key.slice(0, i).replace(/\\/g, "/");
    return f.slice(f.lastIndexOf("/") + 1) + ":" + key.slice(i + 1);
  }
  function lineId(key) { return key.replace(/[^A-Za-z0-9]/g, "_"); }

  /* ---------- backward, in autograd's order ---------- */
  function drawBackward(d) {
    var list = $("bw-list");
    list.innerHTML = "";
    var order = d ? d.order : [];
    $("bw-empty").hidden = order.length > 0;
    order.forEach(function (o, i) {
      var li = el("li", { id: "bw-" + i });
      var b = el("button", { type: "button", "class": "linkish" }, o.text);
      b.addEventListener("click", function () { bwGo(i); });
      li.appendChild(b);
      list.appendChild(li);
    });
    bwMark();
  }
  function bwGo(i) {
    var d = current(), order = d ? d.order : [];
    if (!order.length) return;
    state.bw = Math.max(-1, Math.min(order.length - 1, i));
    if (state.bw >= 0 && order[state.bw].node !== null) { state.node = String(order[state.bw].node); inspect(state.node, d, false); }
    bwMark();
    markNodes();
  }
  function bwMark() {
    var d = current(), order = d ? d.order : [];
    Array.prototype.forEach.call($("bw-list").children, function (li, i) {
      li.classList.toggle("current", i === state.bw);
      li.classList.toggle("done", i < state.bw);
    });
    $("bw-pos").textContent = order.length ? (state.bw < 0 ? "before backward" : (state.bw + 1) + " of " + order.length) : "";
  }
  $("bw-prev").onclick = function () { bwGo(state.bw - 1); };
  $("bw-next").onclick = function () { bwGo(state.bw + 1); };
  $("bw-play").onclick = function () {
    var b = this;
    if (state.bwPlaying) { clearInterval(state.bwPlaying); state.bwPlaying = null; b.textContent = "\u25b6 play"; b.setAttribute("aria-pressed", "false"); return; }
    var d = current(); if (!d || !d.order.length) return;
    if (state.bw >= d.order.length - 1) bwGo(-1);
    b.textContent = "\u23f8 pause"; b.setAttribute("aria-pressed", "true");
    state.bwPlaying = setInterval(function () {
      var dd = current();
      if (!dd || state.bw >= dd.order.length - 1) { clearInterval(state.bwPlaying); state.bwPlaying = null; b.textContent = "\u25b6 play"; b.setAttribute("aria-pressed", "false"); return; }
      bwGo(state.bw + 1);
    }, 900);
  };

  /* ---------- the script's source, coverage style ---------- */
  var everSeen = {};
  (function () {
    var box = $("source");
    D.source.files.forEach(function (f, fi) {
      var h = el("h3", null, f.name + (f.complete ? "" : " (the recorded lines only)"));
      box.appendChild(h);
      var t = el("table", { "class": "code" });
      var prev = 0;
      f.lines.forEach(function (ln) {
        if (prev && ln[0] > prev + 1) {
          var gap = el("tr", { "class": "gap" });
          gap.appendChild(el("td", { "class": "ln" }, "\u22ef"));
          gap.appendChild(el("td", { colspan: "2", "class": "muted" }, (ln[0] - prev - 1) + " lines not recorded"));
          t.appendChild(gap);
        }
        prev = ln[0];
        var key = f.file + ":" + ln[0];
        var tr = el("tr", { id: "src-" + lineId(key), "data-line": key });
        tr.appendChild(el("td", { "class": "ln" }, String(ln[0])));
        tr.appendChild(el("td", { "class": "src" }, ln[1]));
        tr.appendChild(el("td", { "class": "did" }));
        tr.addEventListener("click", function () { selectLine(key, false); });
        t.appendChild(tr);
      });
      box.appendChild(t);
    });
    Object.keys(cache).forEach(function (k) { Object.keys(cache[k].lines).forEach(function (l) { everSeen[l] = true; }); });
  })();
  function drawSource(d) {
    Array.prototype.forEach.call(document.querySelectorAll("#source tr[data-line]"), function (tr) {
      var key = tr.getAttribute("data-line"), did = d && d.lines[key];
      tr.classList.toggle("hit", !!did);
      tr.classList.toggle("seen", !did && !!everSeen[key]);
      tr.classList.toggle("selected-line", key === state.line);
      tr.lastChild.textContent = did ? did.join(" \u00b7 ") : "";
    });
  }
  function selectLine(key, scroll) {
    state.line = key;
    drawSource(current());
    markNodes();
    var tr = $("src-" + lineId(key));
    if (tr && scroll) tr.scrollIntoView({ block: "center" });
  }

  /* ---------- findings and failed checks ---------- */
  function openItem(item) {
    var pos = item.step !== null && posOf[item.step] !== undefined ? posOf[item.step] : state.pos;
    state.node = null;
    go(pos);
    withStep(S[pos].index, function (d) {
      if (!d) return;
      var geo = shapes[String(d.shape)];
      var pick = null;
      if (geo) {
        var names = [item.param, item.op].filter(function (x) { return x; });
        names.some(function (name) {
          return Object.keys(geo.nodes).some(function (k) {
            if (geo.nodes[k].title === name || geo.nodes[k].title + "()" === name) { pick = k; return true; }
            return false;
          });
        });
      }
      if (pick !== null) select(pick);
      var line = null;
      if (item.source) {
        var want = item.source;
        Array.prototype.some.call(document.querySelectorAll("#source tr[data-line]"), function (tr) {
          if (shortSource(tr.getAttribute("data-line")) === want) { line = tr.getAttribute("data-line"); return true; }
          return false;
        });
      } else if (pick !== null && d.nodes[pick].source) { line = d.nodes[pick].source; }
      if (line) selectLine(line, false);
      $("graph-panel").scrollIntoView({ block: "nearest" });
    });
  }
  Array.prototype.forEach.call(document.querySelectorAll("[data-item]"), function (b) {
    b.addEventListener("click", function () { openItem(JSON.parse(b.getAttribute("data-item"))); });
  });

  window.gradtraceExplorer = { go: function (index) { if (posOf[index] !== undefined) go(posOf[index]); },
    select: select, state: state, data: D };
  var start = posOf[D.start] !== undefined ? posOf[D.start] : 0;
  go(start);
  document.documentElement.setAttribute("data-ready", "1");
})();
