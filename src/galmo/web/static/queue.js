// The expert queue: keyboard shortcuts, labels saved through the JSON API, the next galaxy preloaded.
// Keys: 0-9 a class, s skip, n not a galaxy, u (or Backspace) undo. No library, nothing from another site.
(function () {
  "use strict";
  const root = document.getElementById("queue");
  if (!root) return;
  const run = root.dataset.run, order = root.dataset.order;
  const who = document.getElementById("who");
  const status = document.getElementById("status");
  let items = JSON.parse(document.getElementById("queue-items").textContent);
  let busy = false;

  who.value = who.value || localStorage.getItem("galmo-who") || "";
  who.addEventListener("change", () => localStorage.setItem("galmo-who", who.value));

  const thumb = (id) => "/thumb/rgb/" + encodeURI(id);
  function preload() {
    items.slice(1).forEach((it) => { const img = new Image(); img.src = thumb(it.id); });
  }

  function probsTable(top) {
    const table = document.createElement("table");
    table.className = "probs";
    top.forEach(([name, p]) => {
      const tr = table.insertRow();
      tr.insertCell().textContent = name;
      const bar = tr.insertCell(); bar.className = "bar";
      const span = document.createElement("span"); span.style.width = (100 * p).toFixed(1) + "%";
      bar.appendChild(span);
      tr.insertCell().textContent = p.toFixed(3);
    });
    return table;
  }

  function show(data) {
    items = data.items;
    document.getElementById("bar").value = data.progress.done;
    document.getElementById("bar").max = data.progress.total;
    document.getElementById("count").textContent = data.progress.done + " / " + data.progress.total;
    const cur = document.getElementById("current");
    if (!items.length) { cur.textContent = "Nothing left to label."; return; }
    const it = items[0];
    cur.replaceChildren();
    const a = document.createElement("a"); a.id = "cur-link"; a.href = "/galaxy/" + encodeURI(it.id);
    const img = document.createElement("img"); img.id = "cur-img"; img.className = "big"; img.src = thumb(it.id);
    img.alt = it.id; a.appendChild(img); cur.appendChild(a);
    const p = document.createElement("p");
    p.textContent = it.id + " · predicted " + it.pred_name + " (" + it.confidence.toFixed(3) + ")";
    cur.appendChild(p);
    cur.appendChild(probsTable(it.top));
    preload();
  }

  async function call(path, body) {
    if (busy) return;
    busy = true;
    try {
      const r = await fetch("/api/run/" + encodeURIComponent(run) + path, {
        method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
      const data = await r.json();
      if (!r.ok) { status.textContent = "not saved: " + data.error; return; }
      status.textContent = data.event ? "saved " + data.event.id + ": " + data.event.label_name
        : (data.undone ? "undid " + data.undone.id + " (" + data.undone.label_name + ")" : "nothing to undo");
      show(data);
    } catch (e) {
      status.textContent = "not saved: " + e;
    } finally {
      busy = false;
    }
  }

  function decide(decision, label) {
    if (!items.length) return;
    call("/labels", {id: items[0].id, decision: decision, label: label, who: who.value || null, order: order});
  }
  const undo = () => call("/undo", {who: who.value || null, order: order});

  root.querySelectorAll("button[data-decision]").forEach((b) => b.addEventListener("click", () =>
    decide(b.dataset.decision, b.dataset.label === undefined ? null : Number(b.dataset.label))));
  document.getElementById("undo").addEventListener("click", undo);

  const nClasses = root.querySelectorAll("button[data-decision=class]").length;
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.ctrlKey || e.metaKey || e.altKey) return;
    if (/^[0-9]$/.test(e.key) && Number(e.key) < nClasses) decide("class", Number(e.key));
    else if (e.key === "s") decide("skip", null);
    else if (e.key === "n") decide("not_a_galaxy", null);
    else if (e.key === "u" || e.key === "Backspace") undo();
    else return;
    e.preventDefault();
  });
  preload();
})();
