// Gateway sensor dashboard. Every value from the server is inserted as text (textContent),
// never as HTML. Live updates come over server-sent events; a full reload happens only when
// the tables need new rows.
"use strict";

const $ = (id) => document.getElementById(id);
const fmt = (n) => (typeof n === "number" ? n.toLocaleString() : n ?? "-");
// Where an address is ([geo]): "NL, AS64500 Example Net", or "" when unknown.
const origin = (o) => (o ? [o.country, o.asn ? `AS${o.asn}${o.as_org ? " " + o.as_org : ""}` : null].filter(Boolean).join(", ") : "");

async function api(path, opts = {}) {
  const r = await fetch(path, opts);
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body.error || r.status + " " + r.statusText);
  return body;
}

function cell(tr, value, cls) {
  const td = document.createElement("td");
  if (cls) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = value ?? "";
    td.appendChild(span);
  } else {
    td.textContent = value ?? "";
  }
  td.title = value ?? "";
  tr.appendChild(td);
}

// Rows are kept as data so sorting and filtering never re-parse the DOM.
const tables = {};
function setRows(id, rows, render) {
  tables[id] = { rows, render, sortKey: tables[id]?.sortKey, desc: tables[id]?.desc ?? true };
  draw(id);
}
function draw(id) {
  const t = tables[id];
  if (!t) return;
  const filter = (document.querySelector(`.filter[data-table="${id}"]`)?.value || "").toLowerCase();
  let rows = t.rows.filter((r) => !filter || JSON.stringify(r).toLowerCase().includes(filter));
  if (t.sortKey) {
    const k = t.sortKey;
    rows = rows.slice().sort((a, b) => {
      const x = a[k], y = b[k];
      const c = typeof x === "number" && typeof y === "number" ? x - y : String(x ?? "").localeCompare(String(y ?? ""));
      return t.desc ? -c : c;
    });
  }
  if (id === "t-alerts") rows = alertOrder(rows);
  const tbody = $(id).querySelector("tbody");
  tbody.replaceChildren(...rows.map((r) => { const tr = document.createElement("tr"); t.render(tr, r); return tr; }));
}
document.querySelectorAll("th[data-key]").forEach((th) => {
  th.addEventListener("click", () => {
    const id = th.closest("table").id;
    const t = tables[id];
    if (!t) return;
    t.desc = t.sortKey === th.dataset.key ? !t.desc : true;
    t.sortKey = th.dataset.key;
    th.closest("tr").querySelectorAll("th").forEach((h) => h.classList.toggle("sorted", h === th));
    draw(id);
  });
});
document.querySelectorAll(".filter").forEach((i) => i.addEventListener("input", () => draw(i.dataset.table)));
document.getElementById("flows-by-score")?.addEventListener("change", () => loadTables());

// Time on a real axis: x is ms since the epoch, and a gap longer than twice the step between
// two points gets a null between them, so a line is never drawn across hours without data.
function timePoints(items, tsKey, yKey, stepMs) {
  const out = [];
  let prev = null;
  for (const p of items) {
    const x = typeof p[tsKey] === "number" ? p[tsKey] : Date.parse(p[tsKey]);
    if (Number.isNaN(x)) continue;
    if (prev !== null && x - prev > 2 * stepMs) out.push({ x: prev + stepMs, y: null });
    out.push({ x, y: p[yKey] });
    prev = x;
  }
  return out;
}
function timeLabel(ms, spanMs) {
  const iso = new Date(ms).toISOString();
  return spanMs > 86400000 ? iso.slice(5, 16).replace("T", " ") : iso.slice(11, 19);
}
function timeScale(points) {
  const xs = points.map((p) => p.x);
  const span = xs.length ? Math.max(...xs) - Math.min(...xs) : 0;
  return { type: "linear", ticks: { color: "#999", maxTicksLimit: 8, callback: (v) => timeLabel(v, span) } };
}

const charts = {};
function chart(id, type, labels, datasets, extra = {}) {
  if (typeof Chart === "undefined") return;
  if (charts[id]) {
    charts[id].data.labels = labels;
    charts[id].data.datasets = datasets;
    charts[id].update("none");
    return;
  }
  charts[id] = new Chart($(id), {
    type, data: { labels, datasets },
    options: { animation: false, responsive: true, plugins: { legend: { labels: { color: "#ccc" } } },
      scales: type === "doughnut" ? {} : { x: { ticks: { color: "#999", maxTicksLimit: 8 } }, y: { ticks: { color: "#999" } } }, ...extra },
  });
}

function showStats(s) {
  $("c-packets").textContent = fmt(s.totals.packets);
  $("c-flows").textContent = fmt(s.totals.flows);
  $("c-anomalies").textContent = fmt(s.totals.anomalies);
  $("c-alerts").textContent = fmt(s.totals.alerts);
  const step = s.series.length > 1 ? Math.max(1000, (Date.parse(s.series[s.series.length - 1].ts) - Date.parse(s.series[0].ts)) / (s.series.length - 1)) : 1000;
  const traffic = timePoints(s.series, "ts", "pps", step);
  chart("ch-traffic", "line", undefined,
    [{ label: "packets/s", data: traffic, borderColor: "#4aa3ff", pointRadius: 0, spanGaps: false }],
    { scales: { x: timeScale(traffic), y: { ticks: { color: "#999" } } } });
  const p = s.protocols;
  chart("ch-proto", "doughnut", ["TCP", "UDP", "ICMP", "other"],
    [{ data: [p.tcp, p.udp, p.icmp, p.other], backgroundColor: ["#4aa3ff", "#f5a623", "#d0021b", "#7ed321"] }]);
  // Alerts by kind over time: one stacked bar per time bucket, one colour per kind.
  const kinds = [...new Set(s.alert_series.map((a) => a.kind))];
  const colours = ["#f5a623", "#d0021b", "#4aa3ff", "#7ed321", "#bd10e0", "#50e3c2", "#b8e986", "#9b9b9b"];
  const sets = kinds.map((k, i) => ({
    label: k, backgroundColor: colours[i % colours.length],
    data: s.alert_series.filter((a) => a.kind === k).map((a) => ({ x: Date.parse(a.ts), y: a.count })),
  }));
  for (const d of sets) { d.barThickness = 6; }
  chart("ch-kinds", "bar", undefined, sets,
    { scales: { x: { ...timeScale(sets.flatMap((d) => d.data)), stacked: true }, y: { stacked: true, ticks: { color: "#999" } } } });
}

async function loadTables() {
  const [openAlerts, alerts, anomalies, flows, sus, talkers, origins] = await Promise.all([
    api("/api/alerts?state=open&limit=200"), api("/api/alerts?limit=200"), api("/api/anomalies?limit=200"), api($("flows-by-score")?.checked ? "/api/flows?limit=200&sort=score" : "/api/flows?limit=200"),
    api("/api/suspicious-ips?limit=50"), api("/api/top-talkers?limit=50"), api(`/api/origins?limit=20&since=${Math.floor(Date.now() / 1000) - 86400}`),
  ]);
  // Running incidents first (they may be older than the newest closed ones), merged ones not
  // at all: their counts are in the incident that took them over.
  const byId = new Map();
  for (const a of [...openAlerts.items, ...alerts.items]) byId.set(a.id, a);
  setRows("t-alerts", [...byId.values()].filter((a) => a.state !== "merged"), alertRow);
  setRows("t-anomalies", anomalies.items.map((x) => ({ ts: x.flow?.last_seen, src: x.flow?.src_ip, dst: x.flow?.dst_ip,
      score: x.score ?? null, features: (x.top_features || []).map((f) => `${f.feature} (${Math.round(f.share * 100)}%)`).join(", ") })),
    (tr, a) => { cell(tr, a.ts); cell(tr, a.src); cell(tr, a.dst); cell(tr, a.score); cell(tr, a.features); });
  setRows("t-flows", flows.items.map((f) => ({ last_seen: f.last_seen, src_ip: `${f.src_ip}:${f.src_port}`, dst_ip: `${f.dst_ip}:${f.dst_port}`,
      proto: f.proto, packets: f.packets_fwd + f.packets_rev, bytes: f.bytes_fwd + f.bytes_rev, score: f.score ?? null,
      anomalous: f.anomalous === true })),
    (tr, f) => { cell(tr, f.last_seen); cell(tr, f.src_ip); cell(tr, f.dst_ip); cell(tr, f.proto); cell(tr, fmt(f.packets)); cell(tr, fmt(f.bytes));
      cell(tr, f.score === null ? "-" : f.score.toFixed(3), f.anomalous ? "badge sev-medium" : ""); });
  setRows("t-suspicious", sus.items, (tr, s) => { cell(tr, s.ip); cell(tr, s.alerts); cell(tr, s.max_severity, "badge sev-" + s.max_severity); cell(tr, s.kinds.join(", ")); cell(tr, origin(s.origin)); });
  setRows("t-talkers", talkers.items, (tr, t) => { cell(tr, t.ip); cell(tr, fmt(t.bytes)); cell(tr, fmt(t.packets)); cell(tr, t.flows); cell(tr, origin(t.origin)); });
  // Where attacks came from (the last 24 hours): alerts by their remote side's country and AS.
  $("origins-state").textContent = origins.countries.length || origins.asns.length ? `(${fmt(origins.unknown)} alerts without a known origin)`
    : "(no origin known: no [geo] data, or no alert with a remote side yet)";
  setRows("t-countries", origins.countries, (tr, o) => { cell(tr, o.key); cell(tr, fmt(o.alerts)); cell(tr, fmt(o.sources)); });
  setRows("t-asns", origins.asns, (tr, o) => { cell(tr, `AS${o.key}`); cell(tr, o.name || ""); cell(tr, fmt(o.alerts)); cell(tr, fmt(o.sources)); });
}

// One alert row: open incidents marked and drawn first, what happened as a sentence; a click
// opens its detail view.
function alertRow(tr, a) {
  cell(tr, a.state === "open" ? "open" : "closed", "badge st-" + (a.state || "closed"));
  cell(tr, a.last_seen); cell(tr, a.kind); cell(tr, a.severity, "badge sev-" + a.severity);
  const from = (ip) => (ip && a.remote?.ip === ip && origin(a.remote) ? `${ip} (${origin(a.remote)})` : ip ?? "many");
  cell(tr, from(a.src_ip)); cell(tr, from(a.dst_ip)); cell(tr, fmt(a.count));
  const n = a.flows_summed?.flows;
  const summed = n ? ` (+${fmt(n)} small flow${n === 1 ? "" : "s"} summed)` : "";
  cell(tr, (a.summary || JSON.stringify(a.evidence)) + summed, "summary");
  pcapCell(tr, a);
  tr.dataset.id = a.id;
  tr.className = "alert-row" + (a.state === "open" ? " open" : "");
  tr.onclick = (e) => { if (!e.target.closest("button")) openDetail(a.id); };
}

// The alert table keeps open incidents on top whatever column the operator sorts by.
function alertOrder(rows) {
  return rows.slice().sort((x, y) => (y.state === "open") - (x.state === "open"));
}

// The detail view of one alert: its sentence, its fields, its packets over time (gaps shown),
// the model's anomalies about it with their top features, its flows, its pcap, mitigation and
// the alerts merged into it. `#alert-ID` in the address opens it.
async function openDetail(id) {
  let d;
  try {
    d = await api(`/api/alerts/${id}`);
  } catch (e) {
    $("pcap-msg").textContent = `alert ${id}: ${e.message}`;
    return;
  }
  const a = d.alert;
  $("detail").hidden = false;
  if (location.hash !== `#alert-${id}`) history.replaceState(null, "", `#alert-${id}`);
  $("d-title").textContent = `#${a.id} ${a.kind} (${a.state || "closed"}, ${a.severity}): ${a.summary || ""}`;
  const fields = [
    ["state", a.state], ["first seen", a.first_seen], ["last seen", a.last_seen], ["count", a.count],
    ["source", a.src_ip ?? "many"], ["destination", a.dst_ip ?? "many"], ["detector", a.detector],
    ["direction", a.direction], ["hostgroup", a.hostgroup],
    ["remote side", a.remote ? `${a.remote.ip}${origin(a.remote) ? " (" + origin(a.remote) + ")" : ""}` : null],
    ["score", a.score], ["merged into", a.merged_into ? `#${a.merged_into}` : null],
    ...Object.entries(a.evidence || {}).map(([k, v]) => [k, typeof v === "object" ? JSON.stringify(v) : v]),
  ].filter(([, v]) => v !== null && v !== undefined);
  if (a.flows_summed) fields.push(["flows summed", `${fmt(a.flows_summed.flows)} flows, ${fmt(a.flows_summed.packets)} packets`]);
  setRows("t-detail-fields", fields.map(([k, v]) => ({ k, v })), (tr, f) => { cell(tr, f.k); cell(tr, f.v); });
  // The rate the rule measured at each update while it ran (live), and the packets of its
  // finished flows per 10 s (known once they end): both on one time axis, gaps kept.
  const points = timePoints(d.timeline.points, "ts", "packets", d.timeline.bucket_s * 1000)
    .map((p) => ({ x: p.x / 1e6, y: p.y }));
  const hist = (a.rate_history || []).map(([ms, r]) => ({ ms, r }));
  const histStep = hist.length > 1 ? Math.max(1000, (hist[hist.length - 1].ms - hist[0].ms) / (hist.length - 1)) : 1000;
  const rates = timePoints(hist, "ms", "r", histStep);
  const unit = a.kind === "port_scan" ? "ports" : a.kind === "host_sweep" ? "hosts" : a.kind === "ml_anomaly" ? "score" : a.kind === "brute_force" ? "attempts" : a.kind === "beaconing" ? "score" : a.kind === "bgp_session_down" ? "s down" : "packets/s";
  chart("ch-detail", "line", undefined, [
    { label: `rate (${unit})`, data: rates, borderColor: "#d0021b", pointRadius: 1, spanGaps: false, yAxisID: "y" },
    { label: `flow packets per ${d.timeline.bucket_s} s`, data: points, borderColor: "#f5a623", pointRadius: 2, spanGaps: false, yAxisID: "y1" },
  ], { scales: { x: timeScale([...rates, ...points]), y: { position: "left", ticks: { color: "#999" } },
    y1: { position: "right", grid: { drawOnChartArea: false }, ticks: { color: "#999" } } } });
  setRows("t-detail-anomalies", d.anomalies.map((x) => ({ ts: x.flow?.last_seen, flow: `${x.flow?.src_ip} -> ${x.flow?.dst_ip}:${x.flow?.dst_port ?? ""}`,
      score: x.score, features: (x.top_features || []).map((f) => `${f.feature} (${Math.round(f.share * 100)}%)`).join(", ") })),
    (tr, x) => { cell(tr, x.ts); cell(tr, x.flow); cell(tr, x.score); cell(tr, x.features); });
  setRows("t-detail-flows", d.flows.map((f) => ({ last_seen: f.last_seen, src: `${f.src_ip}:${f.src_port}`, dst: `${f.dst_ip}:${f.dst_port}`,
      proto: f.proto, packets: f.packets_fwd + f.packets_rev, end: f.end, score: f.score ?? null })),
    (tr, f) => { cell(tr, f.last_seen); cell(tr, f.src); cell(tr, f.dst); cell(tr, f.proto); cell(tr, fmt(f.packets)); cell(tr, f.end); cell(tr, f.score === null ? "-" : f.score.toFixed(3)); });
  setRows("t-detail-mitigation", d.mitigations, (tr, m) => { cell(tr, new Date(m.ts / 1e6).toISOString()); cell(tr, m.action, "badge act-" + m.action); cell(tr, m.target); cell(tr, m.reason); cell(tr, fmt(m.dropped_packets)); });
  setRows("t-detail-merged", d.merged, (tr, m) => { cell(tr, `#${m.id}`); cell(tr, m.kind); cell(tr, m.summary || ""); });
  $("d-counts").textContent = `${d.flows.length} flows, ${d.anomalies.length} model anomalies, ${d.mitigations.length} mitigation actions, ${d.merged.length} alerts merged in`;
  const p = $("d-pcap");
  p.replaceChildren();
  if (a.pcap) {
    const b = document.createElement("button");
    b.className = "pcap";
    b.textContent = `download ${a.pcap}`;
    b.onclick = () => downloadPcap(a.id, a.pcap);
    p.appendChild(b);
  } else {
    p.textContent = "no packet evidence recorded";
  }
}
$("d-close").onclick = () => { $("detail").hidden = true; history.replaceState(null, "", location.pathname + location.search); };

async function loadStatus() {
  const s = await api("/api/status");
  $("st-capture").textContent = s.capture || "idle";
  $("st-capture").dataset.attached = (s.attached || []).map((a) => a.iface).join(" ");
  const inUse = s.model_in_use;
  $("st-model").textContent = inUse
    ? `threshold ${inUse.threshold.toFixed(3)} (${inUse.threshold_rule === "max_alerts_per_hour" ? `budget ${inUse.max_alerts_per_hour}/h` : `contamination ${inUse.contamination}`}; ~${inUse.expected_alerts_per_hour ?? "?"} alerts/h on its baseline)`
    : s.model ? `${s.model.flows} flows, threshold ${s.model.threshold.toFixed(3)}` : "none";
  // A threshold that could not follow the asked-for rule says why (a baseline too short).
  if (inUse?.threshold_note) $("st-model").textContent += " - " + inUse.threshold_note;
  $("st-uptime").textContent = `${Math.floor(s.uptime_s / 60)} min`;
  const w = s.database_writes;
  $("st-db").textContent = !w ? "read-only" : w.ok ? "writing"
    : `NOT WRITING: ${w.error} (${w.pending_rows} rows held in memory, ${w.dropped_rows} dropped)`;
  $("st-db").className = w && !w.ok ? "badge sev-critical" : "";
}

// A failed load (the sensor restarting, a connection dropped under load) is said and tried
// again in 2 s, so the page heals by itself instead of waiting for the next periodic reload.
let retry = null;
async function refresh() {
  try {
    await loadStatus();
    showStats(await api("/api/stats?limit=120"));
    await loadTables();
    $("ctl-msg").textContent = "";
  } catch (e) {
    $("ctl-msg").textContent = `${e.message} (trying again)`;
    clearTimeout(retry);
    retry = setTimeout(refresh, 2000);
  }
}

// Live: new alerts are prepended as they arrive; stats events redraw cards and charts.
function live() {
  const es = new EventSource("/api/events");
  es.onopen = () => $("st-live").className = "dot on";
  es.onerror = () => $("st-live").className = "dot off";
  // Every write of an alert comes here: a new one, an update of a running incident, its
  // close, or its merge into another (which takes it off the list).
  es.addEventListener("alert", (ev) => {
    const a = JSON.parse(ev.data);
    const t = tables["t-alerts"];
    // No table yet (the first load failed): load it, with this alert in it.
    if (!t) { loadTables().catch(() => {}); return; }
    if (t) {
      const rest = t.rows.filter((r) => r.id !== a.id);
      t.rows = a.state === "merged" ? rest : [a, ...rest];
      draw("t-alerts");
    }
    if (!$("detail").hidden && $("d-title").textContent.startsWith(`#${a.id} `)) openDetail(a.id);
  });
  es.addEventListener("stats", (ev) => showStats(JSON.parse(ev.data)));
}

// An alert's evidence file: a download button when its packets were recorded. The file needs
// the token, so it is fetched with it and handed to the browser as a blob.
function pcapCell(tr, a) {
  const td = document.createElement("td");
  if (a.pcap && a.id) {
    const b = document.createElement("button");
    b.className = "pcap";
    b.textContent = "pcap";
    b.title = `download ${a.pcap} (opens in Wireshark/tshark)`;
    b.onclick = () => downloadPcap(a.id, a.pcap);
    td.appendChild(b);
  }
  tr.appendChild(td);
}

async function downloadPcap(id, name) {
  const t = token();
  if (!t) return;
  $("pcap-msg").textContent = "";
  try {
    const r = await fetch(`/api/alerts/${id}/pcap`, { headers: { Authorization: "Bearer " + t } });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      if (r.status === 401) sessionStorage.removeItem("sensor-token");
      throw new Error(body.error || `HTTP ${r.status}`);
    }
    const url = URL.createObjectURL(await r.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    $("pcap-msg").textContent = `downloaded ${name}`;
  } catch (e) {
    $("pcap-msg").textContent = `alert ${id}: ${e.message}`;
  }
}

function token(ask = true) {
  let t = sessionStorage.getItem("sensor-token");
  if (!t && ask) {
    t = prompt("API token (printed at first start, stored in DATA_DIR/api-token):");
    if (t) sessionStorage.setItem("sensor-token", t);
  }
  return t;
}

function authHeaders(t) {
  return { "Content-Type": "application/json", Authorization: "Bearer " + t };
}

// The interface list needs the token; it is filled once one is known, and after every start
// or stop, with each interface marked when this sensor watches it.
async function loadInterfaces(ask = false) {
  const t = token(ask);
  if (!t) return;
  try {
    const r = await api("/api/interfaces", { headers: authHeaders(t) });
    const sel = $("ctl-iface");
    const keep = sel.value;
    sel.replaceChildren(new Option("interface...", ""));
    for (const i of r.items) {
      const o = new Option(i.attached ? `${i.name} (watching, ${i.mode})` : i.name, i.name);
      o.dataset.attached = i.attached ? "1" : "0";
      sel.appendChild(o);
    }
    sel.value = keep;
    const live = r.live;
    $("ctl-start").disabled = !live;
    $("ctl-stop").disabled = !live;
    if (!live) $("ctl-start").title = $("ctl-stop").title = "read-only server: capture is controlled by `sensor run`";
  } catch (e) {
    if (/token/.test(e.message)) sessionStorage.removeItem("sensor-token");
    $("ctl-msg").textContent = e.message;
  }
}

async function control(path, body) {
  const t = token();
  if (!t) return;
  $("ctl-msg").textContent = "working...";
  try {
    const r = await api(path, { method: "POST", headers: authHeaders(t), body: JSON.stringify(body) });
    await refresh();
    $("ctl-msg").textContent = describe(r);
    await loadInterfaces();
  } catch (e) {
    if (/token/.test(e.message)) sessionStorage.removeItem("sensor-token");
    $("ctl-msg").textContent = e.message;
  }
}

// One line for the outcome of a control request.
function describe(r) {
  if (r.attached) return `watching ${r.attached.iface} (${r.attached.mode})`;
  if (r.detached) return `stopped watching ${r.detached.iface}`;
  if (r.threshold !== undefined) return `model trained on ${fmt(r.flows)} flows, threshold ${r.threshold.toFixed(3)}${r.loaded ? ", now scoring live flows" : ""}${r.threshold_note ? " (" + r.threshold_note + ")" : ""}`;
  if (r.packets !== undefined) return `replayed ${fmt(r.packets)} packets, ${fmt(r.flows)} flows, alerts: ${Object.entries(r.alerts || {}).map(([k, n]) => `${n} ${k}`).join(", ") || "none"}`;
  return JSON.stringify(r);
}

function pickedIface() {
  const i = $("ctl-iface").value;
  if (!i) $("ctl-msg").textContent = "pick an interface first";
  return i;
}

// Mitigation: entries in force with their kernel drop counters, the audit log, and blocks by
// hand. Everything here needs the token; without one the section says so.
async function loadMitigation(ask = false) {
  const t = token(ask);
  if (!t) { $("mit-state").textContent = "(enter the API token to see and change blocks)"; return; }
  try {
    const r = await api("/api/blocklist", { headers: authHeaders(t) });
    const auto = (r.automatic_kinds || []).join(", ");
    $("mit-state").textContent = !r.live ? "(read-only server: the audit log only)"
      : `(${auto ? "automatic for " + auto : "automatic mitigation off"}; ${r.xdp_attached ? "XDP attached" : "not enforced: no XDP attached"})`;
    $("mit-block").disabled = !r.live;
    setRows("t-blocklist", r.entries || [], (tr, e) => {
      cell(tr, e.target); cell(tr, e.kind); cell(tr, e.expires_in_s);
      cell(tr, e.origin === "alert" ? `${e.alert_kind} alert ${e.alert_id ?? ""}` : "API");
      cell(tr, e.reason); cell(tr, fmt(e.dropped_packets)); cell(tr, fmt(e.dropped_bytes));
      const td = document.createElement("td");
      const b = document.createElement("button");
      b.textContent = "Remove";
      b.className = "mit-remove";
      b.dataset.target = e.target;
      b.onclick = () => unblock(e.target);
      td.appendChild(b);
      tr.appendChild(td);
    });
    setRows("t-mitlog", (r.audit || []).map((a) => ({ ...a, alert: a.alert_id ? `${a.alert_kind} #${a.alert_id}` : "" })), (tr, a) => {
      cell(tr, a.ts); cell(tr, a.action, "badge act-" + a.action); cell(tr, a.target); cell(tr, a.reason); cell(tr, a.alert); cell(tr, fmt(a.dropped_packets));
    });
    await loadUpstream(t);
  } catch (e) {
    if (/token/.test(e.message)) sessionStorage.removeItem("sensor-token");
    $("mit-state").textContent = e.message;
  }
}

// Upstream mitigation: the BGP sessions and what is announced now (FlowSpec rules, blackholed
// hosts), each withdrawable by hand.
async function loadUpstream(t) {
  const u = await api("/api/upstream", { headers: authHeaders(t) });
  const sessions = u.sessions || [];
  const up = sessions.filter((s) => s.established).length;
  $("up-state").textContent = !u.enabled ? "(off: [bgp] enabled = false)"
    : u.speaker_error ? `(speaker not answering: ${u.speaker_error})`
    : `(${u.speaker}; ${up} of ${sessions.length} session(s) established; FlowSpec from ${fmt(u.levels?.flowspec_pps ?? 0)} pps, RTBH ${u.levels?.rtbh_pps ? "from " + fmt(u.levels.rtbh_pps) + " pps" : "off"} unless a hostgroup says otherwise)`;
  setRows("t-sessions", sessions, (tr, s) => {
    cell(tr, s.peer); cell(tr, s.asn); cell(tr, s.state, "badge " + (s.established ? "act-unblock" : "act-block")); cell(tr, s.down_since || "");
  });
  setRows("t-upstream", (u.announcements || []).map((a) => ({ ...a, alert: `${a.alert_kind} #${a.alert_id}` })), (tr, a) => {
    cell(tr, a.target); cell(tr, a.kind, "badge act-" + (a.kind === "rtbh" ? "block" : "rate_limit")); cell(tr, a.hostgroup || "");
    cell(tr, a.renewed_while_open ? `${a.expires_in_s} (renewed: alert open)` : a.expires_in_s); cell(tr, a.alert); cell(tr, a.reason);
    cell(tr, a.in_speaker ? "yes" : a.error || "waiting");
    const td = document.createElement("td");
    const b = document.createElement("button");
    b.textContent = "Withdraw";
    b.className = "up-withdraw";
    b.onclick = () => mitigation("DELETE", "/api/upstream?target=" + encodeURIComponent(a.target));
    td.appendChild(b);
    tr.appendChild(td);
  });
}

async function mitigation(method, path, body) {
  const t = token();
  if (!t) return;
  try {
    const r = await api(path, { method, headers: authHeaders(t), body: body && JSON.stringify(body) });
    $("mit-msg").textContent = method === "POST" ? `blocked ${r.target} for ${r.expires_in_s} s`
      : r.withdrawn ? `withdrew ${r.target} upstream`
      : `removed ${r.target} (${fmt(r.packets)} packets dropped)`;
  } catch (e) {
    $("mit-msg").textContent = e.message;
  }
  await loadMitigation();
}

function unblock(target) {
  return mitigation("DELETE", "/api/blocklist?target=" + encodeURIComponent(target));
}

$("mit-block").onclick = () => {
  const prefix = $("mit-prefix").value.trim();
  if (!prefix) { $("mit-msg").textContent = "enter an address or prefix"; return; }
  const body = { prefix, ttl_s: Number($("mit-ttl").value) || 600 };
  if ($("mit-reason").value.trim()) body.reason = $("mit-reason").value.trim();
  return mitigation("POST", "/api/blocklist", body);
};
$("mit-state").onclick = () => loadMitigation(true);
loadMitigation();

// Rules: the built-in thresholds (a field each, changed ones marked) and the operator rules
// (TOML), tried on recorded traffic before they are applied. Everything here needs the token.
let rulesInForce = null;
const tomlValue = (v) => Array.isArray(v) ? "[" + v.map((x) => JSON.stringify(x)).join(", ") + "]" : String(v);
function thresholdInput(key, value) {
  const i = document.createElement("input");
  i.dataset.key = key;
  i.dataset.kind = Array.isArray(value) ? "list" : typeof value;
  i.value = Array.isArray(value) ? value.join(", ") : String(value);
  i.setAttribute("aria-label", key);
  i.addEventListener("input", () => markChanged(i));
  return i;
}
function markChanged(i) {
  i.closest("tr").classList.toggle("changed", i.value.trim() !== i.dataset.inForce);
}
// The editor's rules as TOML: operator rules first (so the server's line numbers are those
// of the text box), then the thresholds that differ from the defaults.
function rulesToml() {
  const lines = [];
  for (const i of document.querySelectorAll("#t-thresholds input")) {
    const d = rulesInForce.defaults[i.dataset.key];
    const raw = i.value.trim();
    let v;
    if (i.dataset.kind === "list") {
      const items = raw ? raw.split(",").map((x) => x.trim()).filter(Boolean) : [];
      v = items.map((x) => (typeof (d[0] ?? 0) === "number" && /^\d+$/.test(x) ? Number(x) : x));
      if (JSON.stringify(v) === JSON.stringify(d)) continue;
    } else if (i.dataset.kind === "boolean") {
      v = raw === "true";
      if (v === d) continue;
    } else {
      v = raw;
      if (Number(raw) === d) continue;
    }
    lines.push(`${i.dataset.key} = ${Array.isArray(v) ? tomlValue(v) : v}`);
  }
  return $("rules-custom").value.trimEnd() + "\n\n[rules]\n" + lines.join("\n") + "\n";
}
async function loadRules(ask = false) {
  const t = token(ask);
  if (!t) { $("rules-state").textContent = "(enter the API token to see and change the rules)"; return; }
  try {
    const r = await api("/api/rules", { headers: authHeaders(t) });
    rulesInForce = r;
    const h = r.history || {};
    $("rules-state").textContent = `(${r.config_file ? "written to " + r.config_file : "no config file: changes are live only"}; ` +
      (h.enabled ? `history for dry runs: ${h.from ? "from " + h.from : "empty so far"}, ${fmt(Math.round((h.bytes || 0) / 1024))} KiB)` : "rules history off: no dry runs)");
    $("rules-apply").disabled = !r.live;
    if (!r.live) $("rules-apply").title = "read-only server: rules are applied to `sensor run`";
    const rows = Object.keys(r.rules).filter((k) => k !== "custom").map((k) => ({ key: k, value: r.rules[k], def: r.defaults[k] }));
    setRows("t-thresholds", rows, (tr, row) => {
      cell(tr, row.key);
      const td = document.createElement("td");
      const i = thresholdInput(row.key, row.value);
      i.dataset.inForce = i.value;
      td.appendChild(i);
      tr.appendChild(td);
      cell(tr, Array.isArray(row.def) ? row.def.join(", ") : String(row.def));
      if (JSON.stringify(row.value) !== JSON.stringify(row.def)) tr.title = "differs from the default";
    });
    $("rules-custom").value = r.custom_toml || "";
    await loadRuleChanges(t);
  } catch (e) {
    if (/token/.test(e.message)) sessionStorage.removeItem("sensor-token");
    $("rules-state").textContent = e.message;
  }
}
async function loadRuleChanges(t) {
  const c = await api("/api/rules/changes", { headers: authHeaders(t) });
  setRows("t-rulechanges", c.items || [], (tr, x) => {
    cell(tr, x.ts); cell(tr, x.actor); cell(tr, x.remote || ""); cell(tr, (x.changes || []).join("; ")); cell(tr, x.file || "live only");
  });
}
function dryRows(id, items) {
  setRows(id, items || [], (tr, a) => {
    cell(tr, a.kind); cell(tr, a.first_seen); cell(tr, a.summary);
  });
}
$("rules-range").onchange = () => {
  const v = $("rules-range").value;
  $("rules-from").hidden = $("rules-to").hidden = v !== "range";
  $("rules-path").hidden = v !== "capture";
};
// What the dry run reads: a range of the history (a preset, or from/to in UTC), or a capture.
function dryRunSource() {
  const v = $("rules-range").value;
  if (v === "capture") return { path: $("rules-path").value.trim() };
  // A datetime-local value leaves out zero seconds; RFC 3339 wants them.
  const utc = (x) => (x.length === 16 ? x + ":00" : x) + "Z";
  if (v === "range") return { from: utc($("rules-from").value), to: utc($("rules-to").value) };
  const to = Math.ceil(Date.now() / 1000);
  return { from: String(to - Number(v)), to: String(to) };
}
$("rules-dry").onclick = async () => {
  const t = token();
  if (!t || !rulesInForce) return;
  $("rules-msg").textContent = "dry run...";
  try {
    const r = await api("/api/rules/dry-run", { method: "POST", headers: authHeaders(t), body: JSON.stringify({ toml: rulesToml(), ...dryRunSource() }) });
    $("dry").hidden = false;
    $("dry-state").textContent = `(${r.capture ? r.capture : r.from + " to " + r.to}: ${fmt(r.history.events)} flow events and ${fmt(r.history.flows)} flows of history read twice in ${fmt(r.elapsed_ms)} ms; ` +
      `the rules in force raise ${fmt(r.current_alerts)} alerts, the changed rules ${fmt(r.candidate_alerts)}, ${fmt(r.unchanged_total)} of them the same` +
      (r.history.dropped ? `; ${fmt(r.history.dropped)} flow records past the history's rate cap were not kept, so floods are partly unseen` : "") + ")";
    $("dry-new-n").textContent = `(${fmt(r.would_raise_total)})`;
    $("dry-gone-n").textContent = `(${fmt(r.would_not_raise_total)})`;
    $("dry-fired-n").textContent = `(${fmt(r.fired_total)})`;
    dryRows("t-dry-new", r.would_raise);
    dryRows("t-dry-gone", r.would_not_raise);
    dryRows("t-dry-fired", r.fired);
    $("rules-msg").textContent = `dry run done: ${fmt(r.would_raise_total)} more, ${fmt(r.would_not_raise_total)} fewer`;
  } catch (e) {
    $("rules-msg").textContent = e.message;
  }
};
$("rules-apply").onclick = async () => {
  const t = token();
  if (!t || !rulesInForce) return;
  const actor = $("rules-actor").value.trim();
  if (!actor) { $("rules-msg").textContent = "enter your name: the audit records who applied the change"; return; }
  try {
    const r = await api("/api/rules", { method: "PUT", headers: authHeaders(t), body: JSON.stringify({ toml: rulesToml(), actor }) });
    $("rules-msg").textContent = r.applied ? `applied: ${r.changes.join("; ")}${r.file ? " (written to " + r.file + ", previous kept as " + (r.previous || "-") + ")" : " (" + r.note + ")"}` : r.message;
    await loadRules();
  } catch (e) {
    $("rules-msg").textContent = e.message;
  }
};
$("rules-reset").onclick = () => { $("rules-msg").textContent = ""; loadRules(); };
$("rules-state").onclick = () => loadRules(true);
loadRules();

$("ctl-replay").onclick = () => control("/api/replay", { path: $("ctl-path").value });
$("ctl-train").onclick = () => {
  const path = $("ctl-path").value;
  if (path) return control("/api/model/train", { path });
  const now = Date.now() / 1000;
  return control("/api/model/train", { since: String(Math.floor(now - 3600)), until: String(Math.ceil(now)) });
};
$("ctl-start").onclick = () => { const iface = pickedIface(); if (iface) control("/api/capture/start", { iface, mode: $("ctl-mode").value }); };
$("ctl-stop").onclick = () => { const iface = pickedIface(); if (iface) control("/api/capture/stop", { iface }); };
$("ctl-iface").onfocus = () => { if ($("ctl-iface").options.length <= 1) loadInterfaces(true); };
loadInterfaces();

refresh().then(() => {
  const m = /^#alert-(\d+)$/.exec(location.hash);
  if (m) openDetail(Number(m[1]));
});
// `?live=0` gives a static page (reports, screenshots, headless tests): no event stream, no
// periodic reload, so the page goes idle once it has drawn.
if (new URLSearchParams(location.search).get("live") !== "0") {
  live();
  setInterval(loadTables, 30000);
  setInterval(loadMitigation, 5000);
}
