// mamba-explain report: builds each page from the data files (window.MR_DATA, written by 06_report)
// and draws its charts with vega-embed (Vega and Vega-Lite bundled beside it; nothing is fetched
// from the network). A classic script, so that the pages open from disk (file://) as well as served.
// window.MR tells a test how it went: `pending` (charts still drawing), `drawn` (charts drawn so far),
// `errors` (messages of charts that failed).
(function () {
  "use strict";
  var D = window.MR_DATA || {};
  var study = D.study;
  var main = document.getElementById("main");
  var MR = (window.MR = { pending: 0, drawn: 0, errors: [], ready: false });
  // the static figures' colours (06_report writes them): a flow or a model looks the same everywhere
  var COLORS = (study && study.colors) || { flows: {}, fallback: ["#636363"], models: ["#4c78a8"] };
  var PALETTE = COLORS.models;
  var SPLITS = { all: "all prompts", first_in_subject: "subject includes the first token", first_not_in_subject: "subject does not include the first token" };
  var CONFIG = {
    font: "DejaVu Sans, Verdana, sans-serif",
    title: { fontSize: 13, subtitleFontSize: 11, subtitleColor: "#555", anchor: "start" },
    axis: { labelFontSize: 11, titleFontSize: 11, titleFontWeight: "normal" },
    legend: { labelFontSize: 11, titleFontSize: 11, labelLimit: 0, titleLimit: 0, orient: "bottom", symbolOpacity: 1 },
    view: { stroke: "#ddd" },
  };

  // ------------------------------------------------------------------ helpers

  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        if (k === "text") e.textContent = attrs[k];
        else if (k === "class") e.className = attrs[k];
        else e.setAttribute(k, attrs[k]);
      });
    }
    (children || []).forEach(function (c) {
      if (c !== null && c !== undefined) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return e;
  }
  function rowsOf(cols) {
    var keys = Object.keys(cols || {});
    var n = keys.length ? cols[keys[0]].length : 0;
    var out = new Array(n);
    for (var i = 0; i < n; i++) {
      var r = {};
      for (var j = 0; j < keys.length; j++) r[keys[j]] = cols[keys[j]][i];
      out[i] = r;
    }
    return out;
  }
  function uniq(xs) {
    var seen = [];
    xs.forEach(function (x) {
      if (seen.indexOf(x) < 0) seen.push(x);
    });
    return seen;
  }
  // the window sizes (ascending), head selectors and conv settings (as text) of 03's rows, in order of appearance
  function configAxes(rows) {
    return {
      ks: uniq(rows.map(function (r) {
        return r.k;
      })).sort(function (a, b) {
        return a - b;
      }),
      heads: uniq(rows.map(function (r) {
        return r.heads;
      })),
      convs: uniq(rows.map(function (r) {
        return String(r.conv);
      })),
    };
  }
  function pct(x) {
    return x === null || x === undefined ? "–" : (100 * x).toFixed(1) + " %";
  }
  function num(x, d) {
    return x === null || x === undefined || !isFinite(x) ? "–" : Number(x).toFixed(d === undefined ? 2 : d);
  }
  function prob(p) {
    if (p === null || p === undefined) return "–";
    if (p === 0) return "0";
    return p >= 1e-3 ? p.toFixed(4) : p.toExponential(3);
  }
  function bytes(n) {
    return n < 1024 ? n + " B" : n < 1048576 ? (n / 1024).toFixed(1) + " KiB" : (n / 1048576).toFixed(1) + " MiB";
  }
  function flowLabel(flow) {
    var p = flow.split("<-");
    return p[1] + " \u2192 " + p[0];
  }
  function flowColor(flows) {
    var next = 0;
    return flows.map(function (f) {
      return COLORS.flows[f] || COLORS.fallback[next++ % COLORS.fallback.length];
    });
  }
  function tokenText(t) {
    return JSON.stringify(t).slice(1, -1);
  }
  function section(title, children, id) {
    return el("section", id ? { id: id } : null, [el("h2", { text: title })].concat(children));
  }
  function table(head, rows, cls) {
    return el("table", cls ? { class: cls } : null, [
      el("thead", null, [el("tr", null, head.map(function (h) {
        return el("th", { text: h });
      }))]),
      el("tbody", null, rows.map(function (r) {
        return el("tr", null, r.map(function (c) {
          return c instanceof Node ? el("td", null, [c]) : el("td", { text: String(c) });
        }));
      })),
    ]);
  }
  /** A labelled <select>; onChange(value) */
  function select(label, options, value, onChange) {
    var s = el("select", { "aria-label": label });
    options.forEach(function (o) {
      var opt = el("option", { value: String(o.value), text: o.label });
      if (String(o.value) === String(value)) opt.selected = true;
      s.appendChild(opt);
    });
    s.addEventListener("change", function () {
      onChange(s.value);
    });
    return el("label", { class: "control" }, [el("span", { text: label }), s]);
  }
  function checkboxes(label, options, values, onChange) {
    var box = el("div", { class: "checks" });
    options.forEach(function (o) {
      var c = el("input", { type: "checkbox", value: o.value });
      c.checked = values.indexOf(o.value) >= 0;
      c.addEventListener("change", function () {
        var vs = [];
        box.querySelectorAll("input").forEach(function (i) {
          if (i.checked) vs.push(i.value);
        });
        onChange(vs);
      });
      box.appendChild(el("label", null, [c, " " + o.label]));
    });
    return el("fieldset", { class: "control" }, [el("legend", { text: label }), box]);
  }
  function width() {
    return Math.max(600, Math.min(1320, main.clientWidth - 16));
  }
  function models() {
    return study ? study.models : [];
  }
  function modelOptions() {
    return models().map(function (m) {
      return { value: m.index, label: m.label + " (" + m.family + ", " + m.n_layer + " layers)" };
    });
  }
  function note(text) {
    return el("p", { class: "note", text: text });
  }

  /** Draw a Vega-Lite spec into a container (replacing what was there); counted in MR. */
  function chart(container, spec) {
    if (container._view) {
      container._view.finalize();
      container._view = null;
    }
    container.innerHTML = "";
    container.classList.add("chart");
    spec.$schema = "https://vega.github.io/schema/vega-lite/v6.json";
    spec.config = Object.assign({}, CONFIG, spec.config || {});
    MR.pending++;
    return window.vegaEmbed(container, spec, { renderer: "svg", actions: false }).then(function (res) {
      container._view = res.view;
      MR.drawn++;
    }, function (err) {
      MR.errors.push(String(err && err.message || err));
      console.error("chart failed:", err);
      container.appendChild(note("This chart could not be drawn: " + (err && err.message || err)));
    }).then(function () {
      MR.pending--;
    });
  }

  /** Two panels (accuracy, % change) of curves with CI bands: one line per series. */
  function curvePanels(values, opts) {
    var W = width();
    var panelW = Math.floor((W - 170) / 2);
    var color = { field: "series", type: "nominal", title: opts.legend, scale: { domain: opts.domain, range: opts.range }, legend: { symbolType: "stroke", symbolStrokeWidth: 3 } };
    var x = { field: opts.x, type: "quantitative", title: opts.xTitle, scale: { domain: opts.xDomain, nice: false }, axis: opts.x === "window" ? { tickMinStep: 1, format: "d" } : { format: ".0f" } };
    var bands = values.some(function (v) {
      return v.n > 1 && v.change_lo !== null;
    });
    function panel(field, title, rule) {
      var layers = [];
      if (bands) {
        layers.push({ mark: { type: "area", opacity: 0.1 }, encoding: { x: x, y: { field: field + "_lo", type: "quantitative" }, y2: { field: field + "_hi" }, color: color } });
        ["lo", "hi"].forEach(function (end) {
          layers.push({ mark: { type: "line", strokeWidth: 0.8, opacity: 0.6, strokeDash: [2, 2] }, encoding: { x: x, y: { field: field + "_" + end, type: "quantitative" }, color: color, detail: { field: "series" } } });
        });
      }
      layers.push({
        mark: { type: "line", point: { size: 30 }, strokeWidth: 2 },
        encoding: {
          x: x,
          y: { field: field, type: "quantitative", title: field === "accuracy" ? "accuracy (%)" : "% change of p(target)", scale: field === "accuracy" ? { domain: [0, 100] } : { zero: false } },
          color: color,
          tooltip: [
            { field: "series", title: opts.legend },
            { field: "window", title: "window (layer)" },
            { field: "layers", title: "layers" },
            { field: "depth", title: "depth (%)", format: ".1f" },
            { field: "n", title: "n (prompts)" },
            { field: field, title: field === "accuracy" ? "accuracy (%)" : "% change", format: ".3~f" },
            { field: field + "_lo", title: "95 % CI low", format: ".3~f" },
            { field: field + "_hi", title: "95 % CI high", format: ".3~f" },
          ],
        },
      });
      if (rule !== null) {
        layers.push({ data: { values: [{}] }, mark: { type: "rule", color: "#888", strokeDash: [4, 3] }, encoding: { y: { datum: rule, type: "quantitative" } } });
      }
      return { width: panelW, height: opts.height || 260, title: title, layer: layers };
    }
    return {
      title: { text: opts.title, subtitle: opts.subtitle.concat([bands ? "line: mean · band: 95 % bootstrap CI (hover a point for n and the CI)" : "line: mean (one prompt: no band)"]) },
      data: { values: values },
      hconcat: [panel("accuracy", "accuracy (target still the top prediction)", opts.baseAccuracy), panel("change", "relative change of p(target)", 0)],
    };
  }

  function curveValues(rows, seriesOf) {
    return rows.map(function (a) {
      return {
        series: seriesOf(a),
        window: a.window,
        depth: a.depth,
        layers: a.window_end - a.window_start === 1 ? String(a.window_start) : a.window_start + "\u2013" + (a.window_end - 1),
        n: a.n,
        accuracy: a.accuracy === null ? null : 100 * a.accuracy,
        accuracy_lo: a.accuracy_lo === null ? null : 100 * a.accuracy_lo,
        accuracy_hi: a.accuracy_hi === null ? null : 100 * a.accuracy_hi,
        change: a.relative_change,
        change_lo: a.relative_change_lo,
        change_hi: a.relative_change_hi,
      };
    });
  }

  /**
   * The selects of a configuration, each setting `state` and calling `draw()`: k (opts.ks), split
   * (opts.split), the head selector (opts.heads, labelled opts.headsLabel) and the conv path (opts.convs).
   */
  function configControls(state, opts, draw) {
    var out = [];
    var opt = function (v, label) {
      return { value: v, label: label === undefined ? String(v) : label };
    };
    if (opts.ks) {
      out.push(select("k (layers per window)", opts.ks.map(function (k) {
        return opt(k);
      }), state.k, function (v) {
        state.k = Number(v);
        draw();
      }));
    }
    if (opts.split) {
      out.push(select("split", Object.keys(SPLITS).map(function (k) {
        return opt(k, SPLITS[k]);
      }), state.split, function (v) {
        state.split = v;
        draw();
      }));
    }
    if (opts.heads) {
      out.push(select(opts.headsLabel || "heads", opts.heads.map(function (h) {
        return opt(h);
      }), state.heads, function (v) {
        state.heads = v;
        draw();
      }));
    }
    if (opts.convs) {
      out.push(select("conv path", opts.convs.map(function (c) {
        return opt(c, c === "true" ? "cut too" : "open");
      }), state.conv, function (v) {
        state.conv = v;
        draw();
      }));
    }
    return out;
  }

  /** Controls in a row, and a re-draw on change: state is kept in `state`, `draw()` redraws. */
  function controlsBar(children) {
    return el("div", { class: "controls" }, children);
  }

  // ------------------------------------------------------------------ pages

  var pages = {};

  pages.index = function () {
    var ms = models();
    main.appendChild(el("h1", { text: "Study " + study.name }));
    var ds = study.dataset;
    main.appendChild(el("p", { class: "lead", text: ms.length + " model" + (ms.length === 1 ? "" : "s") + (ds ? " · dataset " + ds.path + ", " + ds.rowCount + " rows (" + ds.rows + ")" : "") + " · results of " + (study.finishedAt || "?").replace("T", " ").slice(0, 19) + " UTC" }));
    main.appendChild(section("Models", [table(
      ["model", "family", "layers", "units per layer", "weights", "rows", "accuracy scan", "accuracy attention", "03 prompts (filter)", "04 prompts"],
      ms.map(function (m) {
        return [el("span", { title: m.model, text: m.label }), m.family, m.n_layer, m.units_per_layer + " " + m.unit_name + "s", m.dtype, m.rows, pct(m.accuracy_scan), pct(m.accuracy_attention), m.prompts + " (" + m.filter + ")", m.heatmapPrompts];
      }),
      "models",
    )]));
    var acc = [];
    ms.forEach(function (m) {
      [["scan", m.accuracy_scan], ["attention", m.accuracy_attention]].forEach(function (p) {
        if (p[1] !== null && p[1] !== undefined) acc.push({ model: m.label, mode: p[0] + " mode", accuracy: 100 * p[1] });
      });
    });
    var accChart = el("div");
    main.appendChild(section("Accuracy without knockouts", [accChart]));
    chart(accChart, {
      title: { text: "Share of rows whose top prediction is the true token", subtitle: "per model and mode (01_construct)" },
      data: { values: acc },
      width: Math.min(560, width() - 200),
      height: { step: 24 },
      encoding: {
        y: { field: "model", type: "nominal", title: null, sort: null },
        yOffset: { field: "mode", sort: null },
        x: { field: "accuracy", type: "quantitative", title: "accuracy (%)", scale: { domain: [0, 100] } },
        color: { field: "mode", type: "nominal", title: null, scale: { domain: ["scan mode", "attention mode"], range: ["#4c78a8", "#f58518"] } },
      },
      layer: [
        { mark: { type: "bar", tooltip: true } },
        { mark: { type: "text", align: "left", dx: 4, fontSize: 11 }, encoding: { text: { field: "accuracy", type: "quantitative", format: ".1f" }, color: { value: "#222" } } },
      ],
    });
    var settings = ms.map(function (m) {
      var eng = m.engine || {};
      return el("details", null, [
        el("summary", { text: m.label + ": settings and engine" }),
        el("p", { text: "model " + m.model + " · run folder " + m.run + " · engine: " + (eng.adapter || "?") + " · Deno " + (eng.deno || "?") + (eng.engineSha256 ? " · engine code " + String(eng.engineSha256).slice(0, 12) : "") }),
        table(["stage", "parameters", "finished (UTC)", "wall time"], m.stages.map(function (s) {
          return [s.name, Object.keys(s.params).map(function (k) {
            return k + " = " + s.params[k];
          }).join(" · ") || "–", String(s.finishedAt).replace("T", " ").slice(0, 19), num(s.wallTimeS, 1) + " s"];
        }), "settings"),
      ]);
    });
    main.appendChild(section("Run settings and engine", settings));
    // the data files: one row per file, one column per model (the study's own below)
    var names = [];
    study.files.forEach(function (f) {
      var name = f.stage + "/" + f.path.split("/").pop();
      if (f.model !== null && names.indexOf(name) < 0) names.push(name);
    });
    var link = function (f) {
      return el("span", null, [el("a", { href: f.path, text: f.path.split("/").pop() }), " (" + bytes(f.bytes) + ")"]);
    };
    var perModel = table(["stage"].concat(ms.map(function (m) {
      return m.label;
    })), names.map(function (name) {
      return [name.split("/")[0]].concat(ms.map(function (m) {
        var f = study.files.filter(function (x) {
          return x.model === m.index && x.stage + "/" + x.path.split("/").pop() === name;
        })[0];
        return f ? link(f) : "–";
      }));
    }), "small files");
    var own = study.files.filter(function (f) {
      return f.model === null;
    });
    main.appendChild(section("Data files", [
      el("p", { class: "lead", text: "Copies of the tables and manifests these pages are drawn from (parquet: pandas.read_parquet, pyarrow, DuckDB)." }),
      perModel,
      el("h3", { text: "The study (05_compare_models)" }),
      table(["file"], own.map(function (f) {
        return [link(f)];
      }), "small files"),
    ]));
  };

  pages.modes = function () {
    main.appendChild(el("h1", { text: "Scan mode vs attention mode" }));
    main.appendChild(el("p", { class: "lead", text: "Each row through the model twice: the recurrent scan and the materialised attention matrix. They should agree to float rounding; Δ = attention \u2212 scan." }));
    var state = { model: 0 };
    var body = el("div");
    main.appendChild(controlsBar([select("model", modelOptions(), 0, function (v) {
      state.model = Number(v);
      draw();
    })]));
    main.appendChild(body);
    function draw() {
      body.innerHTML = "";
      var m = models()[state.model];
      var d = D["m" + state.model + "_modes"];
      if (m.modes.length < 2) {
        body.appendChild(note(m.label + " (" + m.family + ") runs in one mode only (" + m.modes.join(", ") + "): there is nothing to compare."));
        return;
      }
      var s = d.summary;
      if (s) {
        body.appendChild(table(["", "scan", "attention"], [
          ["accuracy", pct(s.modes.scan.accuracy) + " (" + s.modes.scan.hit_count + ")", pct(s.modes.attention.accuracy) + " (" + s.modes.attention.hit_count + ")"],
        ], "small"));
        body.appendChild(el("p", { text: s.rows + " rows · hit differs in " + s.hit_differs + " · prediction differs in " + s.pred_differs + " · mean |Δ p(true)| " + Number(s.delta.true_prob.mean_abs).toExponential(2) + " · mean |Δ top p| " + Number(s.delta.max_prob.mean_abs).toExponential(2) }));
      }
      var rows = rowsOf(d.rows).map(function (r) {
        return {
          row: r.row,
          prompt: r.prompt,
          d_true: r.true_prob_attention - r.true_prob_scan,
          d_max: r.max_prob_attention - r.max_prob_scan,
          p_scan: r.true_prob_scan,
          p_attention: r.true_prob_attention,
          differs: r.hit_scan !== r.hit_attention || r.pred_scan !== r.pred_attention ? "hit or prediction differs" : "same in both modes",
          jitter: ((r.row * 0.6180339887498949) % 1) * 2 - 1,
        };
      });
      var c = el("div");
      body.appendChild(c);
      function strip(field, title) {
        return {
          title: title,
          width: width() - 80,
          height: 110,
          mark: { type: "point", filled: true, opacity: 0.6, size: 26 },
          encoding: {
            x: { field: field, type: "quantitative", title: "Δ (attention \u2212 scan)", axis: { format: "~e", tickCount: 8 } },
            y: { field: "jitter", type: "quantitative", axis: null, scale: { domain: [-1.3, 1.3] } },
            color: { field: "differs", type: "nominal", title: null, scale: { domain: ["same in both modes", "hit or prediction differs"], range: ["#4c78a8", "#e45756"] } },
            tooltip: [{ field: "row" }, { field: "prompt" }, { field: "p_scan", title: "p(true) scan", format: ".4~e" }, { field: "p_attention", title: "p(true) attention", format: ".4~e" }, { field: field, title: "Δ", format: ".3~e" }],
          },
        };
      }
      chart(c, {
        title: { text: m.label + ": the difference per row", subtitle: ["each point a row (jittered vertically); hover for the prompt and both values"] },
        data: { values: rows },
        vconcat: [strip("d_true", "Δ p(true token)"), strip("d_max", "Δ top probability")],
      });
      var diff = rows.filter(function (r) {
        return r.differs !== "same in both modes";
      }).slice(0, 50);
      if (diff.length) body.appendChild(section("Rows whose hit or prediction differs (first 50)", [table(["row", "prompt", "p(true) scan", "p(true) attention"], diff.map(function (r) {
        return [r.row, r.prompt, prob(r.p_scan), prob(r.p_attention)];
      }))]));
    }
    draw();
  };

  pages.flows = function () {
    main.appendChild(el("h1", { text: "Information flow: attention knockouts" }));
    main.appendChild(el("p", { class: "lead", text: "Edges from a source token set into a target set blocked in a window of k layers; the lines show how often the true token stays the top prediction, and how its probability changes (03_info_flow)." }));
    var state = { model: 0 };
    var bar = el("div");
    var c = el("div");
    main.appendChild(bar);
    main.appendChild(c);
    function rowsFor() {
      return rowsOf(D["m" + state.model + "_flows"]);
    }
    function setup() {
      var rows = rowsFor();
      var axes = configAxes(rows), ks = axes.ks, heads = axes.heads, convs = axes.convs;
      var flows = uniq(rows.map(function (r) {
        return r.flow;
      }));
      state.k = ks.indexOf(Number(state.k)) >= 0 ? Number(state.k) : ks[0];
      state.heads = heads.indexOf(state.heads) >= 0 ? state.heads : heads[0];
      state.conv = convs.indexOf(state.conv) >= 0 ? state.conv : convs[0];
      state.split = state.split || "all";
      state.x = state.x || "window";
      state.flows = (state.flows || flows).filter(function (f) {
        return flows.indexOf(f) >= 0;
      });
      if (!state.flows.length) state.flows = flows;
      bar.innerHTML = "";
      bar.appendChild(controlsBar([
        select("model", modelOptions(), state.model, function (v) {
          state.model = Number(v);
          setup();
        }),
      ].concat(configControls(state, { ks: ks, split: true, heads: heads, headsLabel: models()[state.model].unit_name + "s knocked out", convs: convs }, draw), [
        select("x axis", [{ value: "window", label: "window layer" }, { value: "depth", label: "depth (% of layers)" }], state.x, function (v) {
          state.x = v;
          draw();
        }),
        checkboxes("flows (source \u2192 target)", flows.map(function (f) {
          return { value: f, label: flowLabel(f) };
        }), state.flows, function (vs) {
          state.flows = vs;
          draw();
        }),
      ])));
      draw();
    }
    function draw() {
      var m = models()[state.model];
      var all = rowsFor();
      var flows = uniq(all.map(function (r) {
        return r.flow;
      }));
      var rows = all.filter(function (r) {
        return r.k === state.k && r.heads === state.heads && String(r.conv) === state.conv && r.split === state.split && state.flows.indexOf(r.flow) >= 0;
      });
      var colors = flowColor(flows);
      var values = curveValues(rows, function (r) {
        return flowLabel(r.flow);
      });
      var ns = uniq(rows.map(function (r) {
        return r.n;
      })).sort(function (a, b) {
        return a - b;
      });
      var widest = rows.reduce(function (w, r) {
        return !w || r.n > w.n ? r : w;
      }, null);
      var xMax = state.x === "depth" ? 100 : Math.max.apply(null, [1].concat(all.map(function (r) {
        return r.window;
      })));
      chart(c, curvePanels(values, {
        title: m.label + ": edges knocked out in windows of k = " + state.k + " layer" + (state.k === 1 ? "" : "s"),
        subtitle: [SPLITS[state.split] + " · n = " + (ns.length ? (ns.length === 1 ? ns[0] : ns[0] + "\u2013" + ns[ns.length - 1]) : 0) + " prompts · " + m.unit_name + "s: " + state.heads + " · conv path: " + (state.conv === "true" ? "cut too" : "open")],
        legend: "flow (source \u2192 target)",
        domain: flows.map(flowLabel),
        range: colors,
        x: state.x,
        xTitle: state.x === "depth" ? "window position, % of the " + m.n_layer + " layers" : "window start layer (k = " + state.k + ")",
        xDomain: [0, xMax],
        baseAccuracy: widest ? 100 * widest.base_accuracy : null,
      }));
    }
    setup();
  };

  pages.heatmaps = function () {
    main.appendChild(el("h1", { text: "Heatmaps: where the last position reads from" }));
    main.appendChild(el("p", { class: "lead", text: "For every token and every window of layers, the edge token \u2192 last is blocked; the cell shows p(true token) after the knockout, or its change relative to the unblocked run (04_heatmap)." }));
    var state = { model: 0, prompt: 0, metric: "p" };
    var bar = el("div");
    var info = el("div", { class: "prompt-info" });
    var c = el("div", { id: "heatmap" });
    main.appendChild(bar);
    main.appendChild(info);
    main.appendChild(c);
    function setup() {
      var h = D["m" + state.model + "_heatmap"];
      if (state.prompt >= h.prompts.length) state.prompt = 0;
      bar.innerHTML = "";
      bar.appendChild(controlsBar([
        select("model", modelOptions(), state.model, function (v) {
          state.model = Number(v);
          setup();
        }),
        select("prompt", h.prompts.map(function (p, i) {
          return { value: i, label: "row " + p.row + ": " + p.prompt };
        }), state.prompt, function (v) {
          state.prompt = Number(v);
          draw();
        }),
        select("colour", [{ value: "p", label: "p(true token)" }, { value: "change", label: "% change of p(true token)" }], state.metric, function (v) {
          state.metric = v;
          draw();
        }),
      ]));
      draw();
    }
    function draw() {
      var m = models()[state.model];
      var h = D["m" + state.model + "_heatmap"];
      info.innerHTML = "";
      if (!h.prompts.length) {
        info.appendChild(note(m.label + ": 04_heatmap ran no prompt."));
        c.innerHTML = "";
        return;
      }
      var p = h.prompts[state.prompt];
      var last = p.tokens.length - 1;
      info.appendChild(el("p", null, [el("strong", { text: p.prompt }), " \u2192 ", el("strong", { text: p.target }), " · row " + p.row]));
      info.appendChild(el("p", { text: "p(true token) without knockout p_base = " + prob(p.baseProb) + " · windows of k = " + h.k + " layers · " + m.unit_name + "s knocked out: " + h.heads + " · conv path " + (h.conv ? "cut too" : "open") }));
      info.appendChild(tokenChips(p.tokens, p.subjectTokens));
      var labels = p.tokens.map(function (t, i) {
        return (p.subjectTokens.indexOf(i) >= 0 ? "[S] " : "") + tokenText(t) + (i === last ? "  \u25c0 last" : "");
      });
      var values = rowsOf(p.cells).map(function (r) {
        return {
          position: r.position,
          token: labels[r.position],
          window_start: r.window_start,
          layers: r.window_start + "\u2013" + (r.window_end - 1),
          p: r.true_prob,
          change: r.relative_change,
          hit: r.hit ? "yes" : "no",
        };
      });
      var nWin = uniq(values.map(function (v) {
        return v.window_start;
      })).length;
      var cell = Math.max(10, Math.min(90, Math.floor((width() - 420) / Math.max(1, nWin))));
      var colour = state.metric === "p"
        ? { field: "p", type: "quantitative", title: "p(true)", scale: { scheme: "viridis" }, legend: { format: ".3~e", orient: "right", gradientLength: Math.max(60, Math.min(160, 22 * p.tokens.length - 10)) } }
        : { field: "change", type: "quantitative", title: "% change", scale: { scheme: "redblue", domainMid: 0 }, legend: { format: ".3~f", orient: "right", gradientLength: Math.max(60, Math.min(160, 22 * p.tokens.length - 10)) } };
      chart(c, {
        title: { text: "p(" + JSON.stringify(p.target) + ") with the edge token \u2192 last blocked", subtitle: ["p_base = " + prob(p.baseProb) + " · [S] = subject token · \u25c0 last = the last position · " + m.label] },
        data: { values: values },
        width: { step: cell },
        height: { step: 22 },
        mark: { type: "rect" },
        encoding: {
          x: { field: "window_start", type: "ordinal", title: "window start layer l (layers l \u2026 l + " + (h.k - 1) + ")", axis: { labelAngle: 0, labelExpr: nWin > 24 ? "datum.value % 4 === 0 ? datum.label : ''" : "datum.label" } },
          y: {
            field: "position",
            type: "ordinal",
            title: null,
            axis: {
              labelExpr: JSON.stringify(labels) + "[datum.value]",
              labelFontSize: 12,
              labelLimit: 300,
              labelFontWeight: { condition: { test: "indexof(" + JSON.stringify(p.subjectTokens) + ", datum.value) >= 0 || datum.value === " + last, value: "bold" }, value: "normal" },
              labelColor: { condition: { test: "indexof(" + JSON.stringify(p.subjectTokens) + ", datum.value) >= 0", value: "#b35900" }, value: "#222" },
            },
          },
          color: colour,
          tooltip: [{ field: "token" }, { field: "position" }, { field: "layers", title: "layers blocked" }, { field: "p", title: "p(true)", format: ".4~e" }, { field: "change", title: "% change", format: ".3~f" }, { field: "hit", title: "still top" }],
        },
      });
      c.setAttribute("data-row", String(p.row));
      c.setAttribute("data-metric", state.metric);
    }
    setup();
  };

  function tokenChips(tokens, subject) {
    var last = tokens.length - 1;
    return el("div", { class: "tokens", "aria-label": "tokens" }, tokens.map(function (t, i) {
      var cls = "tok" + (subject.indexOf(i) >= 0 ? " subj" : "") + (i === last ? " last" : "");
      return el("span", { class: cls, title: "position " + i + (subject.indexOf(i) >= 0 ? ", subject" : "") + (i === last ? ", last" : ""), text: tokenText(t) });
    }));
  }

  function loadScript(src) {
    return new Promise(function (resolve, reject) {
      var s = document.createElement("script");
      s.src = src;
      s.onload = resolve;
      s.onerror = function () {
        reject(new Error("cannot load " + src));
      };
      document.head.appendChild(s);
    });
  }

  pages.prompt = function () {
    main.appendChild(el("h1", { text: "One prompt: tokens, predictions, every flow" }));
    var idx = D.prompts;
    if (!idx.rows.length) {
      main.appendChild(note("No prompt ran in 03_info_flow."));
      return;
    }
    main.appendChild(el("p", { class: "lead", text: idx.rows.length + " of the " + idx.total + " prompts of the 03_info_flow samples have a page here (the first by row)." }));
    var m0 = /r=(\d+)/.exec(location.hash);
    var state = { row: m0 && idx.rows.some(function (r) {
      return r.row === Number(m0[1]);
    }) ? Number(m0[1]) : idx.rows[0].row, metric: "change" };
    var bar = el("div");
    var body = el("div");
    main.appendChild(bar);
    main.appendChild(body);
    var configs = models().map(function (m) {
      return rowsOf(D["m" + m.index + "_configs"]);
    });
    var axes = configAxes([].concat.apply([], configs)), ks = axes.ks, heads = axes.heads;
    state.k = ks[0];
    state.heads = heads[0];
    state.conv = "false";
    bar.appendChild(controlsBar([
      select("prompt", idx.rows.map(function (r) {
        return { value: r.row, label: "row " + r.row + ": " + r.prompt };
      }), state.row, function (v) {
        state.row = Number(v);
        location.hash = "r=" + v;
        load();
      }),
    ].concat(configControls(state, { ks: ks, heads: heads, headsLabel: "heads / channels", convs: ["false", "true"] }, draw), [
      select("y", [{ value: "change", label: "% change of p(target)" }, { value: "p", label: "p(target)" }], state.metric, function (v) {
        state.metric = v;
        draw();
      }),
    ])));
    var data = null;
    function load() {
      MR.pending++;
      loadScript("data/prompt/r" + state.row + ".js").then(function () {
        data = D["prompt_r" + state.row];
        draw();
      }, function (e) {
        MR.errors.push(String(e.message));
        console.error(e.message);
      }).then(function () {
        MR.pending--;
      });
    }
    function draw() {
      if (!data) return;
      body.innerHTML = "";
      body.appendChild(el("p", null, [el("strong", { text: data.prompt }), " \u2192 true: ", el("strong", { text: data.target }), " · subject: " + data.subject + " · row " + data.row]));
      models().forEach(function (m, i) {
        var pm = data.models[i];
        var box = el("div", { class: "model-box" }, [el("h2", { text: m.label })]);
        body.appendChild(box);
        box.appendChild(table(["mode", "top prediction", "its p", "p(true)", "correct"], m.modes.map(function (mode) {
          var b = pm.base[mode];
          return b ? [mode, JSON.stringify(b.pred), prob(b.max_prob), prob(b.true_prob), b.hit ? "yes" : "no"] : [mode, "–", "–", "–", "–"];
        }), "small"));
        if (!pm.tokens) {
          box.appendChild(note("This prompt is not in " + m.label + "'s 03_info_flow sample."));
          return;
        }
        box.appendChild(tokenChips(pm.tokens, pm.subjectTokens));
        var cs = configs[i];
        var values = [];
        pm.curves.c.forEach(function (ci, j) {
          var c = cs[ci];
          if (c.k !== state.k || c.heads !== state.heads || String(c.conv) !== state.conv) return;
          var p = pm.curves.p[j];
          values.push({
            flow: flowLabel(c.flow),
            window: c.window,
            layers: c.window_end - c.window_start === 1 ? String(c.window_start) : c.window_start + "\u2013" + (c.window_end - 1),
            p: p,
            change: p === null || !pm.baseProb ? null : ((p - pm.baseProb) * 100) / pm.baseProb,
            still: pm.curves.h[j] ? "yes" : "no",
          });
        });
        var cc = el("div");
        box.appendChild(cc);
        if (!values.length) {
          cc.appendChild(note("No knockout of this prompt with k = " + state.k + ", " + state.heads + ", conv " + (state.conv === "true" ? "cut" : "open") + "."));
          return;
        }
        var flows = uniq(cs.map(function (c) {
          return c.flow;
        }));
        var y = state.metric === "p" ? { field: "p", type: "quantitative", title: "p(target)", axis: { format: ".2~e" }, scale: { zero: false } } : { field: "change", type: "quantitative", title: "% change of p(target)", scale: { zero: false } };
        chart(cc, {
          title: { text: m.label + ": every flow, windows of k = " + state.k, subtitle: ["p_base = " + prob(pm.baseProb) + " · hover a point for the window and values"] },
          data: { values: values },
          width: width() - 260,
          height: 240,
          layer: [
            { mark: { type: "line", point: { size: 30 }, strokeWidth: 2 }, encoding: {
              x: { field: "window", type: "quantitative", title: "window start layer", axis: { tickMinStep: 1, format: "d" } },
              y: y,
              color: { field: "flow", type: "nominal", title: "flow (source \u2192 target)", scale: { domain: flows.map(flowLabel), range: flowColor(flows) }, legend: { orient: "right" } },
              tooltip: [{ field: "flow" }, { field: "window" }, { field: "layers" }, { field: "p", format: ".4~e" }, { field: "change", title: "% change", format: ".3~f" }, { field: "still", title: "still top" }],
            } },
            { data: { values: [{}] }, mark: { type: "rule", color: "#888", strokeDash: [4, 3] }, encoding: { y: { datum: state.metric === "p" ? pm.baseProb : 0, type: "quantitative" } } },
          ],
        });
      });
    }
    load();
  };

  pages.models = function () {
    var ms = models();
    main.appendChild(el("h1", { text: "The models compared" }));
    main.appendChild(el("p", { class: "lead", text: "Each model's information-flow curves against the window's relative depth (% of its layers), so that models of different depths line up (05_compare_models)." }));
    var low = rowsOf(study.lowest);
    var all = [];
    ms.forEach(function (m) {
      rowsOf(D["m" + m.index + "_flows"]).forEach(function (r) {
        r.label = m.label;
        all.push(r);
      });
    });
    var state = { split: "all", metric: "change" };
    var axes = configAxes(all), ks = axes.ks, heads = axes.heads, convs = axes.convs;
    state.k = ks[0];
    state.heads = heads[0];
    state.conv = convs[0];
    var c = el("div");
    // what the selectors pick in these models: heads (Mamba-2), channels (Mamba-1), or both
    var units = uniq(models().map(function (m) {
      return m.unit_name + "s";
    })).join(" / ");
    var sec = section("Curves against relative depth", [controlsBar(configControls(state, { ks: ks, split: true, heads: heads, headsLabel: units + " knocked out", convs: convs }, function () {
      draw();
    }).concat([
      select("y", [{ value: "change", label: "% change of p(true)" }, { value: "accuracy", label: "accuracy (%)" }], state.metric, function (v) {
        state.metric = v;
        draw();
      }),
    ])), c]);
    main.appendChild(sec);
    var lowBox = el("div");
    main.appendChild(section("Base accuracy and the lowest point per flow", [el("p", { class: "lead", text: "Over all prompts, for the k, heads and conv setting chosen above: each model's lowest mean relative change of p(true) and the window (and depth) where it is." }), lowBox]));
    var labels = ms.map(function (m) {
      return m.label;
    });
    function draw() {
      var rows = all.filter(function (r) {
        return r.k === state.k && r.heads === state.heads && String(r.conv) === state.conv && r.split === state.split;
      });
      var values = curveValues(rows, function (r) {
        return r.label;
      });
      values.forEach(function (v, i) {
        v.flow = flowLabel(rows[i].flow);
      });
      var flows = uniq(rows.map(function (r) {
        return flowLabel(r.flow);
      }));
      lowBox.innerHTML = "";
      lowBox.appendChild(table(
        ["model", "flow", "n", "base accuracy", "lowest % change", "95 % CI", "window", "depth"],
        low.filter(function (l) {
          return l.k === state.k && l.heads === state.heads && String(l.conv) === state.conv;
        }).map(function (l) {
          return [l.label, flowLabel(l.flow), l.n, pct(l.base_accuracy), num(l.relative_change), "[" + num(l.relative_change_lo) + ", " + num(l.relative_change_hi) + "]", l.window, num(l.depth, 1) + " %"];
        }),
        "small",
      ));
      var f = state.metric;
      var cols = Math.max(1, Math.min(3, flows.length));
      var pw = Math.floor((width() - 60 - cols * 90) / cols);
      var color = { field: "series", type: "nominal", title: "model", scale: { domain: labels, range: labels.map(function (_, i) {
        return PALETTE[i % PALETTE.length];
      }) }, legend: { symbolType: "stroke", symbolStrokeWidth: 3 } };
      var x = { field: "depth", type: "quantitative", title: "window position, % of layers", scale: { domain: [0, 100], nice: false }, axis: { values: [0, 25, 50, 75, 100] } };
      chart(c, {
        title: { text: "Windows of k = " + state.k + " layer" + (state.k === 1 ? "" : "s") + " · " + SPLITS[state.split], subtitle: [units + ": " + state.heads + " · conv path: " + (state.conv === "true" ? "cut too" : "open") + " · line: mean, band: 95 % bootstrap CI (hover for n and CI)"] },
        data: { values: values },
        columns: cols,
        concat: flows.map(function (fl) {
          return {
            title: fl,
            width: pw,
            height: 180,
            transform: [{ filter: { field: "flow", equal: fl } }],
            layer: [
              { mark: { type: "area", opacity: 0.12 }, encoding: { x: x, y: { field: f + "_lo", type: "quantitative" }, y2: { field: f + "_hi" }, color: color } },
              { mark: { type: "line", point: { size: 24 }, strokeWidth: 2 }, encoding: {
                x: x,
                y: { field: f, type: "quantitative", title: f === "accuracy" ? "accuracy (%)" : "% change", scale: f === "accuracy" ? { domain: [0, 100] } : { zero: false } },
                color: color,
                tooltip: [{ field: "series", title: "model" }, { field: "depth", format: ".1f", title: "depth (%)" }, { field: "layers" }, { field: "n", title: "n (prompts)" }, { field: f, format: ".3~f" }, { field: f + "_lo", title: "95 % CI low", format: ".3~f" }, { field: f + "_hi", title: "95 % CI high", format: ".3~f" }],
              } },
            ],
          };
        }),
      });
    }
    draw();
    if (study.compareFigures.length) {
      main.appendChild(section("Static figures (05_compare_models)", [el("ul", null, study.compareFigures.map(function (f) {
        return el("li", null, [el("a", { href: f, text: f.split("/").pop() })]);
      }))]));
    }
    var dsec = section("Decay per layer (Mamba's \u201cfeatures\u201d)", [el("p", { class: "lead", text: "Histograms of each layer's decays: exp(A) = exp(\u2212exp(A_log)) per head for Mamba-2 (small = fast), \u03a3\u2099 exp(A[c, n]) per channel for Mamba-1. The head selectors fast:a/b and slow:a/b rank by these." })]);
    main.appendChild(dsec);
    ms.forEach(function (m) {
      var d = rowsOf(D["m" + m.index + "_decay"]);
      if (!d.length) {
        dsec.appendChild(note(m.label + " (" + m.family + ") has no decay."));
        return;
      }
      var cc = el("div", { class: "decay" });
      dsec.appendChild(cc);
      var cols = Math.min(m.n_layer, Math.max(2, Math.floor((width() - 40) / 170)));
      chart(cc, {
        title: { text: m.label + ": decay per " + m.unit_name + ", by layer", subtitle: [m.units_per_layer + " " + m.unit_name + "s per layer, " + m.n_layer + " layers"] },
        data: { values: d },
        facet: { field: "layer", type: "ordinal", title: null, header: { labelExpr: "'layer ' + datum.value", labelFontSize: 11 } },
        columns: cols,
        spec: {
          width: 120,
          height: 70,
          mark: { type: "bar", color: "#4c78a8", tooltip: true },
          encoding: {
            x: { field: "decay", type: "quantitative", bin: { maxbins: 16 }, title: "decay" },
            y: { aggregate: "count", type: "quantitative", title: m.unit_name + "s" },
          },
        },
        resolve: { scale: { y: "independent" } },
      });
    });
  };

  // ------------------------------------------------------------------ start

  var page = document.body.getAttribute("data-page");
  main.innerHTML = "";
  if (!study) {
    main.appendChild(note("The report's data (data/study.js) is missing: open the report from its folder."));
    return;
  }
  try {
    pages[page]();
  } catch (e) {
    MR.errors.push(String(e && e.message || e));
    console.error(e);
    main.appendChild(note("This page failed: " + (e && e.message || e)));
  }
  MR.ready = true;
})();
