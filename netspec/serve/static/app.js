// The playground page: compile on every pause in typing, show the summary, diagram and errors.
"use strict";
(function () {
  const DEBOUNCE_MS = 20; // a pause in typing this long sends the spec
  const $ = (id) => document.getElementById(id);
  const fmt = (n) => Number(n).toLocaleString("en-US");
  const state = { seq: 0, shown: 0, controller: null, timer: null, lastEdit: 0, result: null, rows: [] };
  // `busy`: an edit is waiting for its compile (the tests and the benchmark wait on it)
  // latencyMs: from the last keystroke to the summary and errors painted; diagramLatencyMs:
  // to the diagram painted (the benchmark reads both)
  const page = (window.netspecPlayground = {
    updates: 0, latencyMs: null, diagramLatencyMs: null, busy: true, state,
  });

  // netspec/units.py's `compact`, written the same (tests/test_serve_browser.py compares them):
  // three significant digits and a unit, 140000000 -> 140M, 999999 -> 1M
  function sig3(x) {
    const text = x.toPrecision(3);
    return text.includes(".") && !text.includes("e") ? text.replace(/0+$/, "").replace(/\.$/, "") : text;
  }
  const UNITS = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "K"]];
  function compact(n) {
    for (let i = 0; i < UNITS.length; i++) {
      const [div, s] = UNITS[i];
      if (Math.abs(n) < div) continue;
      const text = sig3(n / div);
      if (Math.abs(Number(text)) < 1000) return text + s;
      if (i === 0) return Math.round(n / div) + s; // past the largest unit
      return sig3(n / UNITS[i - 1][0]) + UNITS[i - 1][1]; // 999,999 rounds to 1M
    }
    return String(Number(Number(n).toPrecision(6))); // Python's `g`
  }
  page.compact = compact;
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
    }
    for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
    return e;
  }
  function options() {
    return {
      text: NetspecEditor.getText(page.view),
      bindings: $("bindings").value,
      collapse: $("collapse").checked,
      depth: $("depth").value ? Number($("depth").value) : null,
      color: $("color").value || null,
    };
  }
  function schedule() {
    state.lastEdit = performance.now();
    page.busy = true;
    $("explore-result").classList.add("stale"); // explored an earlier text
    if (state.saves && !state.dirty) setDirty(true);
    clearTimeout(state.timer);
    state.timer = setTimeout(() => { state.timer = null; compile(); }, DEBOUNCE_MS);
  }
  // Every POST carries the launch's token (the server put it in the page) as JSON: the
  // server refuses any other request that could write a file or start work.
  const TOKEN = document.querySelector('meta[name="netspec-token"]').content;
  function api(path, body, signal) {
    return fetch(path, {
      method: "POST", body: JSON.stringify(body), signal,
      headers: { "Content-Type": "application/json", "X-Netspec-Token": TOKEN },
    });
  }
  async function post(body, signal) {
    return (await api("/api/compile", body, signal)).json();
  }
  const painted = () => new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));
  // Two requests per edit, sent together: the summary and errors (milliseconds) and the
  // diagram (Graphviz). Each part of the page updates when its answer arrives, so the table
  // never waits for the layout; the server compiles once for both. A newer edit cancels both.
  async function compile() {
    const seq = ++state.seq;
    if (state.controller) state.controller.abort();
    const controller = (state.controller = new AbortController());
    setStatus("compiling…", "busy");
    const body = options();
    const t0 = performance.now();
    const current = () => seq === state.seq;
    const summary = post({ ...body, diagram: false }, controller.signal).then(async (result) => {
      if (!current()) return;
      const t1 = performance.now();
      show(result);
      const t2 = performance.now();
      await painted();
      if (!current()) return;
      page.latencyMs = performance.now() - state.lastEdit;
      // where the time went: the pause, the request, the page update, the next frame
      page.timing = { wait: t0 - state.lastEdit, request: t1 - t0, update: t2 - t1, frame: performance.now() - t2 };
    });
    const diagram = post({ ...body, summary: false }, controller.signal).then(async (drawn) => {
      if (!current()) return;
      const t1 = performance.now();
      if (drawn.svg || drawn.note) showDiagram(drawn.svg, drawn.note);
      else $("diagram").classList.add("stale"); // no graph: keep the last diagram, dimmed
      const t2 = performance.now();
      await painted();
      if (!current()) return;
      page.diagramLatencyMs = performance.now() - state.lastEdit;
      page.diagramTiming = { request: t1 - t0, update: t2 - t1, frame: performance.now() - t2 };
    });
    try {
      await Promise.all([summary, diagram]);
    } catch (err) {
      if (err.name === "AbortError") return;
      if (current()) setStatus("server unreachable: " + err.message, "bad");
      return;
    }
    if (!current()) return;
    page.updates += 1;
    page.busy = state.timer !== null;
    document.body.dataset.updates = String(page.updates);
  }
  function setStatus(text, cls) {
    const s = $("status");
    s.textContent = text;
    s.className = "status " + cls;
  }
  function show(result) {
    state.result = result;
    // a family: say which parameters the bindings box takes, and point at Explore
    const free = result.free || [];
    $("bindings").placeholder = free.length ? free.map((n) => n + "=…").join(" ") : "N=2 M=3 pool=on";
    $("explore").classList.toggle("suggest", free.length > 0);
    NetspecEditor.setErrors(page.view, result.errors || []);
    showErrors(result.errors || []);
    if (result.graph) {
      showTotals(result.graph);
      showTable(result.graph);
      for (const id of ["totals", "table"]) $(id).classList.remove("stale");
    } else {
      for (const id of ["totals", "table"]) $(id).classList.add("stale");
    }
    const n = (result.errors || []).length;
    if (n) setStatus(`${n} error${n > 1 ? "s" : ""}`, "bad");
    else setStatus(`ok · ${result.graph.name} · ${compact(result.graph.totals.params)} params · ${compact(result.graph.totals.macs)} MACs · ${result.ms} ms`, "ok");
  }
  function showErrors(errors) {
    const box = $("errors");
    box.replaceChildren();
    for (const e of errors) {
      const where = e.span ? `${e.span.line}:${e.span.col}` : "";
      const item = el("div", { class: "error", "data-line": e.span ? e.span.line : "", "data-col": e.span ? e.span.col : "" },
        el("span", { class: "where" }, where ? where + ": " : ""), "error: " + e.message);
      for (const note of e.notes || []) item.append("\n  " + note);
      if (e.hint) item.append("\n  hint: " + e.hint);
      if (e.span) item.onclick = () => NetspecEditor.select(page.view, e.span.line, e.span.col);
      box.append(item);
    }
  }
  function showTotals(g) {
    const t = g.totals;
    const rows = [
      ["params", fmt(t.params), compact(t.params)],
      ["non-trainable buffers", fmt(t.buffers), "batch norm running statistics"],
      ["MACs", fmt(t.macs), compact(t.macs) + " multiply-adds (conv + fc)"],
      ["FLOPs", fmt(t.flops), compact(t.flops) + " = 2 x MACs"],
      ["activation memory", fmt(t.memory_elements), "elements, forward, per example"],
      ["  at " + t.dtype, fmt(t.memory_bytes), "bytes (" + (t.memory_bytes / 2 ** 20).toFixed(1) + " MiB)"],
      ["output", g.output, g.classes ? g.classes + " classes" : ""],
    ];
    const table = el("table", { id: "totals-table" });
    table.append(el("tr", {}, el("td", { colSpan: 3 }, el("b", {}, g.name + (g.description ? ": " + g.description : "")))));
    for (const [a, b, c] of rows) table.append(el("tr", {}, el("td", {}, a), el("td", { class: "num" }, b), el("td", { class: "dim" }, c)));
    for (const b of g.budgets) {
      const unit = b.metric === "memory" ? " bytes" : "";
      table.append(el("tr", { class: "budget" },
        el("td", {}, `budget ${b.metric} ${b.op} ${compact(b.limit)}`),
        el("td", { class: "num " + (b.ok ? "pass" : "fail") }, b.ok ? "pass" : "FAIL"),
        el("td", { class: "dim" }, `${fmt(Math.round(b.value))}${unit} (${b.limit ? Math.round((100 * b.value) / b.limit) : 0}% of the limit)`)));
    }
    $("totals").replaceChildren(table);
  }
  function showTable(g) {
    state.rows = g.rows;
    const body = document.createDocumentFragment();
    for (const r of g.rows) {
      const tr = el("tr", { class: r.implicit ? "implicit" : "", "data-id": r.id },
        el("td", {}, r.id), el("td", {}, r.kind + (r.implicit ? " (implicit)" : "")),
        el("td", { class: "num" }, r.shape), el("td", { class: "num" }, r.memory ? fmt(r.memory) : "-"),
        el("td", { class: "num" }, r.params ? fmt(r.params) : "-"), el("td", { class: "num" }, r.macs ? fmt(r.macs) : "-"));
      if (r.line) tr.onclick = () => NetspecEditor.select(page.view, r.line, r.col);
      body.append(tr);
    }
    if (g.layers > g.rows.length) {
      body.append(el("tr", { class: "more" }, el("td", { colSpan: 6 },
        `… ${fmt(g.layers - g.rows.length)} more layers (the totals count all ${fmt(g.layers)}; netspec check lists every row)`)));
    }
    $("table").tBodies[0].replaceChildren(body);
  }
  function showDiagram(svg, note) {
    $("diagram-note").textContent = note || "";
    const box = $("diagram");
    box.innerHTML = svg || "";
    box.classList.remove("stale");
  }
  $("diagram").addEventListener("click", (ev) => {
    const node = ev.target.closest("g.node");
    if (!node || !node.id.startsWith("box:")) return;
    const key = node.id.slice(4).split("~")[0];
    const row = state.rows.find((r) => r.id === key || r.id.startsWith(key + "."));
    if (row && row.line) NetspecEditor.select(page.view, row.line, row.col);
  });

  async function load(url) {
    const r = await fetch(url);
    const data = await r.json();
    NetspecEditor.setText(page.view, data.text || "");
    if (data.saves) { // `netspec serve SPEC`: Save writes the file back
      state.saves = data.saves;
      state.name = data.name;
      $("save").hidden = false;
      setDirty(false);
    }
  }
  function setDirty(dirty) {
    state.dirty = dirty;
    $("save").textContent = dirty ? "Save •" : "Save";
  }
  async function save() {
    if (!state.saves) return;
    const r = await api("/api/save", { text: NetspecEditor.getText(page.view), base: state.saves });
    const data = await r.json();
    if (!r.ok) {
      if (data.errors.some((e) => e.span)) showErrors(data.errors); // not a spec: say where
      setStatus("not saved: " + data.errors[0].message, "bad");
      return;
    }
    state.saves = data.saves;
    setDirty(false);
    setStatus("saved " + data.path, "ok");
  }
  async function exportOnnx() {
    setStatus("exporting ONNX…", "busy");
    const r = await api("/api/export", { text: NetspecEditor.getText(page.view), bindings: $("bindings").value });
    if (!r.ok) {
      const data = await r.json();
      showErrors(data.errors || []);
      setStatus("export failed", "bad");
      return;
    }
    const blob = await r.blob();
    const name = (r.headers.get("Content-Disposition") || "").match(/filename="([^"]+)"/);
    const a = el("a", { href: URL.createObjectURL(blob), download: name ? name[1] : "model.onnx" });
    document.body.append(a);
    a.click();
    a.remove();
    page.exported = { name: a.download, bytes: blob.size };
    setStatus(`exported ${a.download} (${fmt(blob.size)} bytes)`, "ok");
  }
  async function explore() {
    setStatus("exploring…", "busy");
    const box = $("explore-result");
    const r = await api("/api/explore", { text: NetspecEditor.getText(page.view) });
    const data = await r.json();
    box.hidden = false;
    box.classList.remove("stale");
    box.replaceChildren(el("button", { class: "close", title: "close", onclick: () => { box.hidden = true; } }, "×"));
    if (!data.ok) {
      box.append(el("div", { class: "error" }, (data.errors || []).map((e) => e.message + (e.hint ? "\nhint: " + e.hint : "")).join("\n")));
      setStatus("explore failed", "bad");
      return;
    }
    box.append(el("div", {}, `${fmt(data.members)} members${data.sampled ? " (sampled)" : ""}: ${fmt(data.valid)} valid, ${fmt(data.fitting)} within budget; Pareto front of ${data.front.length} (${data.seconds} s)`));
    box.append(el("img", { src: data.plot, alt: "Pareto front" }));
    const t = el("table", { id: "front" });
    t.append(el("tr", {}, el("th", {}, "#"), el("th", {}, "bindings"), el("th", {}, "params"), el("th", {}, "MACs"), el("th", {}, "memory")));
    for (const m of data.front) t.append(el("tr", {}, el("td", {}, m.number), el("td", {}, m.bindings), el("td", { class: "num" }, fmt(m.params)), el("td", { class: "num" }, fmt(m.macs)), el("td", { class: "num" }, fmt(m.memory))));
    box.append(t);
    setStatus("explored", "ok");
  }

  async function main() {
    page.view = NetspecEditor.create($("editor"), "", schedule);
    for (const id of ["bindings"]) $(id).addEventListener("input", schedule);
    for (const id of ["collapse", "depth", "color"]) $(id).addEventListener("change", schedule);
    $("export").onclick = exportOnnx;
    $("save").onclick = save;
    document.addEventListener("keydown", (ev) => {
      if ((ev.ctrlKey || ev.metaKey) && ev.key === "s") { ev.preventDefault(); save(); }
    });
    $("explore").onclick = explore;
    const zoo = await (await fetch("/api/zoo")).json();
    for (const z of zoo) $("zoo").append(el("option", { value: z.name }, z.name + (z.title ? " — " + z.title : "")));
    $("zoo").onchange = () => { if ($("zoo").value) load("/api/zoo/" + encodeURIComponent($("zoo").value)); };
    await load("/api/start");
  }
  main();
})();
