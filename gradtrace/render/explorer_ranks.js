/* gradtrace explorer: the ranks panel of a distributed run (render/explorer_ranks.py).
   It follows the step the explorer shows (the text of #graph-step) and draws, per rank,
   its batch and local gradients, and the synchronised .grad of DDP's all-reduce. */
(function () {
  "use strict";
  var X = window.gradtraceExplorer;
  if (!X || !X.data.ranks) return;
  var R = X.data.ranks;
  var $ = function (id) { return document.getElementById(id); };
  var mark = { param: null, rank: null };

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function shown(v) {  // a value as the panel writes it
    if (!v) return "\u2014";
    if (v.text && v.text.length === 1 && (v.shape === "scalar" || v.shape === "1"))
      return v.shape === "1" ? "[" + v.text[0] + "]" : v.text[0];
    if (v.text) return v.shape + " [" + v.text.join(", ") + "]";
    return v.shape + " " + v.stats;
  }
  function cell(tr, v, cls, data) {
    var td = el("td", { "class": "v" + (cls ? " " + cls : "") }, shown(v));
    if (data) Object.keys(data).forEach(function (k) { td.setAttribute("data-" + k, data[k]); });
    tr.appendChild(td);
    return td;
  }

  function draw(index) {
    $("ranks-step").textContent = String(index);
    var body = $("ranks-body");
    body.textContent = "";
    var d = R.steps[String(index)];
    if (!d) {
      body.appendChild(el("p", { "class": "muted" }, "Step " + index + "'s ranks are not on this page " +
        "(it holds the steps listed under the curves); `gradtrace report` with a larger budget, or " +
        "`gradtrace check FOLDER`, says them."));
      return;
    }
    // the local batches
    var bt = el("table", { id: "ranks-batch" });
    var hr = el("tr");
    hr.appendChild(el("th", null, "rank"));
    hr.appendChild(el("th", null, "loss"));
    hr.appendChild(el("th", null, "its local batch (the inputs its forward saw)"));
    bt.appendChild(hr);
    d.ranks.forEach(function (r) {
      var tr = el("tr", { "data-rank": String(r) });
      tr.appendChild(el("th", { "class": mark.rank === r ? "hl" : "" }, "rank " + r));
      tr.appendChild(el("td", { "class": "v" }, d.loss[String(r)] || "\u2014"));
      var td = el("td", { "class": "v" });
      (d.batch[String(r)] || []).forEach(function (b, i) {
        var line = el("div", { "data-input": b.name }, b.name + " = " + shown(b.value));
        td.appendChild(line);
      });
      if (!(d.batch[String(r)] || []).length) td.textContent = "no input tensor recorded";
      tr.appendChild(td);
      bt.appendChild(tr);
    });
    body.appendChild(bt);
    if (!d.params.length) {
      body.appendChild(el("p", { "class": "muted" }, "No gradient in this step on any rank."));
      return;
    }
    // the gradients: local per rank, their mean, the synchronised .grad, the check
    var gt = el("table", { id: "ranks-grads" });
    var h = el("tr");
    h.appendChild(el("th", null, "parameter"));
    d.ranks.forEach(function (r) {
      var th = el("th", { "class": mark.rank === r ? "hl" : "" }, "rank " + r + " ");
      th.appendChild(el("span", { "class": "sub" }, "local gradient"));
      h.appendChild(th);
    });
    var hm = el("th", null, "mean ");
    hm.appendChild(el("span", { "class": "sub" }, "of the local gradients"));
    h.appendChild(hm);
    var hs = el("th", null, ".grad ");
    hs.appendChild(el("span", { "class": "sub" }, "after the all-reduce"));
    h.appendChild(hs);
    h.appendChild(el("th", null, "all-reduce check"));
    gt.appendChild(h);
    d.params.forEach(function (p) {
      var tr = el("tr", { "data-param": p.name, "class": mark.param === p.name ? "hl" : "" });
      var name = el("td", null, p.name);
      var bucket = p.bucket[String(d.ranks[0])];
      if (bucket) { name.appendChild(el("br")); name.appendChild(el("span", { "class": "sub" }, "all-reduce, " + bucket)); }
      tr.appendChild(name);
      d.ranks.forEach(function (r) {
        cell(tr, p.local[String(r)], "grad" + (mark.rank === r && mark.param === p.name ? " hl" : ""),
             { rank: String(r), what: "local" });
      });
      cell(tr, p.mean, "", { what: "mean" });
      var sr = Object.keys(p.synced);
      if (!sr.length) {
        tr.appendChild(el("td", { "class": "muted" }, "not all-reduced (no DDP forward, or no_sync())"));
      } else if (p.same_bits) {
        var td = cell(tr, p.synced[sr[0]], "grad", { what: "synced" });
        td.appendChild(el("br"));
        td.appendChild(el("span", { "class": "sub" }, "the same bits on all " + sr.length + " ranks"));
      } else {
        var tds = el("td", { "class": "v grad" });
        sr.forEach(function (r) { tds.appendChild(el("div", { "data-rank": r }, "rank " + r + ": " + shown(p.synced[r]))); });
        tr.appendChild(tds);
      }
      var c = p.check;
      var ct = el("td", null, c ? (c.status === "pass" ? "\u2713 pass" : c.status === "fail" ? "\u2717 fail" : "n/a") : "\u2014");
      if (c) {
        ct.className = c.status === "pass" ? "pass" : c.status === "fail" ? "fail" : "muted";
        ct.title = c.detail;
        if (c.rel) { ct.appendChild(el("br")); ct.appendChild(el("span", { "class": "sub" }, "rel err " + c.rel)); }
      }
      tr.appendChild(ct);
      gt.appendChild(tr);
    });
    body.appendChild(gt);
  }

  // the findings about ranks, each a link to its step, parameter and rank
  (function () {
    var box = $("ranks-findings");
    if (!R.findings.length) {
      box.appendChild(el("p", { "class": "muted" }, "No finding about the ranks: they stayed in step, " +
        "every parameter got a gradient on every rank, and the replicas stayed equal."));
      return;
    }
    box.appendChild(el("h3", null, "Findings about the ranks"));
    var ul = el("ul");
    R.findings.forEach(function (f) {
      var li = el("li", { "class": "rank-finding", "data-kind": f.kind });
      li.appendChild(el("b", null, f.title));
      li.appendChild(document.createTextNode(" \u2014 " + f.message + " "));
      if (f.step !== null) {
        var b = el("button", { type: "button", "class": "linkish" },
          "show step " + f.step + (f.rank !== null ? ", rank " + f.rank : "") + (f.param ? ", " + f.param : ""));
        b.addEventListener("click", function () {
          mark = { param: f.param, rank: f.rank };
          X.go(f.step);
          $("ranks-panel").scrollIntoView({ block: "nearest" });
        });
        li.appendChild(b);
      }
      ul.appendChild(li);
    });
    box.appendChild(ul);
  })();

  var target = $("graph-step");
  var last = null;
  function follow() {
    var index = parseInt(target.textContent, 10);
    if (isNaN(index) || index === last) return;
    last = index;
    draw(index);
  }
  new MutationObserver(function () { last = null; follow(); }).observe(target, { childList: true, characterData: true, subtree: true });
  // a finding of the page's own list points at a parameter: mark its row
  Array.prototype.forEach.call(document.querySelectorAll("[data-item]"), function (b) {
    b.addEventListener("click", function () {
      var item = JSON.parse(b.getAttribute("data-item"));
      mark = { param: item.param, rank: null };
      last = null;
      follow();
    });
  });
  follow();
  document.documentElement.setAttribute("data-ranks-ready", "1");
})();
