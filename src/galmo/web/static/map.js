// The embedding map: the run's points (from /api/run/RUN/map) drawn on a canvas, coloured by a group,
// class or score; hovering names a galaxy, clicking opens it. No library, nothing from another site.
(function () {
  "use strict";
  const root = document.getElementById("map");
  if (!root) return;
  const run = root.dataset.run;
  const canvas = document.getElementById("map-canvas"), ctx = canvas.getContext("2d");
  const select = document.getElementById("colour"), legend = document.getElementById("legend");
  const note = document.getElementById("map-note"), hover = document.getElementById("hover");
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                   "#bcbd22", "#393b79", "#ad494a", "#7f7f7f"];
  const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];  // viridis
  const MISSING = "#c8ccd2", PAD = 14;
  let data = null, px = [], py = [];

  function ramp(t) {
    const s = Math.min(Math.max(t, 0), 1) * (RAMP.length - 1), k = Math.min(Math.floor(s), RAMP.length - 2);
    const f = s - k, c = RAMP[k].map((v, j) => Math.round(v + f * (RAMP[k + 1][j] - v)));
    return "rgb(" + c.join(",") + ")";
  }

  function colourOf(i) {
    const c = data.colour;
    if (!c) return PALETTE[0];
    const v = c.values[i];
    if (v === null || v < 0) return MISSING;
    if (c.kind === "category") return PALETTE[v % PALETTE.length];
    const [lo, hi] = c.range;
    return ramp(hi > lo ? (v - lo) / (hi - lo) : 0.5);
  }

  function layout() {  // data coordinates to canvas pixels, one scale for both axes (distances kept)
    const xs = data.x, ys = data.y;
    const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    const s = Math.min((canvas.width - 2 * PAD) / ((x1 - x0) || 1), (canvas.height - 2 * PAD) / ((y1 - y0) || 1));
    const ox = (canvas.width - s * (x1 - x0)) / 2, oy = (canvas.height - s * (y1 - y0)) / 2;
    px = xs.map((x) => ox + s * (x - x0));
    py = ys.map((y) => canvas.height - oy - s * (y - y0));  // y up
  }

  function draw() {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const r = data.ids.length > 5000 ? 1.6 : 3.2;
    ctx.globalAlpha = 0.85;
    for (let i = 0; i < px.length; i++) {
      ctx.fillStyle = colourOf(i);
      ctx.beginPath(); ctx.arc(px[i], py[i], r, 0, 2 * Math.PI); ctx.fill();
    }
    ctx.globalAlpha = 1;
  }

  function drawLegend() {
    legend.replaceChildren();
    const c = data.colour;
    if (!c) return;
    const title = document.createElement("b"); title.textContent = c.name; legend.appendChild(title);
    const row = (swatch, text) => {
      const d = document.createElement("div"), i = document.createElement("i");
      i.style.background = swatch; d.appendChild(i); d.appendChild(document.createTextNode(text)); legend.appendChild(d);
    };
    if (c.kind === "category") c.categories.forEach((name, k) => row(PALETTE[k % PALETTE.length], name));
    else {
      const d = document.createElement("div"), i = document.createElement("i"); i.className = "ramp";
      i.style.background = "linear-gradient(to right, " + RAMP.map((v) => "rgb(" + v.join(",") + ")").join(", ") + ")";
      d.append(c.range[0].toPrecision(3) + " ", i, " " + c.range[1].toPrecision(3)); legend.appendChild(d);
    }
    if (c.values.some((v) => v === null || v < 0)) row(MISSING, "unknown");
  }

  function nearest(ev) {  // the point under the mouse (within 8 px), or -1
    const b = canvas.getBoundingClientRect();
    const x = (ev.clientX - b.left) * canvas.width / b.width, y = (ev.clientY - b.top) * canvas.height / b.height;
    let best = -1, bestD = 64;
    for (let i = 0; i < px.length; i++) {
      const d = (px[i] - x) ** 2 + (py[i] - y) ** 2;
      if (d < bestD) { best = i; bestD = d; }
    }
    return best;
  }

  async function load(colour) {
    const q = colour ? "?colour=" + encodeURIComponent(colour) : "";
    const r = await fetch("/api/run/" + encodeURIComponent(run) + "/map" + q);
    const got = await r.json();
    if (!r.ok) { note.textContent = "no map: " + got.error; return; }
    data = got;
    select.replaceChildren(...data.options.map(([key, name]) => new Option(name, key)));
    if (data.colour) select.value = data.colour.key;
    const ev = data.explained.map((v) => (100 * v).toFixed(1) + " %").join(", ");
    note.textContent = data.shown + (data.shown < data.n ? " of " + data.n + " (a random sample)" : "") +
      " galaxies · PCA, variance explained " + ev;
    layout(); draw(); drawLegend();
    root.dataset.ready = data.colour ? data.colour.key : "none";
  }

  canvas.addEventListener("mousemove", (ev) => {
    const i = data ? nearest(ev) : -1;
    canvas.style.cursor = i >= 0 ? "pointer" : "crosshair";
    hover.textContent = i >= 0 ? data.ids[i] : "\u00a0";
  });
  canvas.addEventListener("click", (ev) => {
    const i = data ? nearest(ev) : -1;
    if (i >= 0) window.location.href = "/galaxy/" + encodeURI(data.ids[i]);
  });
  select.addEventListener("change", () => {
    history.replaceState(null, "", "?colour=" + encodeURIComponent(select.value));
    load(select.value);
  });
  // where a galaxy is drawn, in the page's CSS pixels (for tests and for linking from elsewhere)
  window.galmoMap = {
    point: (id) => {
      const i = data.ids.indexOf(id), b = canvas.getBoundingClientRect();
      return i < 0 ? null : [b.left + px[i] * b.width / canvas.width, b.top + py[i] * b.height / canvas.height];
    },
    ids: () => data.ids.slice(),
  };
  load(root.dataset.colour);
})();
