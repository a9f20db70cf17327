// rhizome UI: a read-only view of the mesh drawn from this agent's JSON API.
// Every value from the API is put into the page as text (never as markup).
"use strict";

const REFRESH_MS = 3000;
const SVG_NS = "http://www.w3.org/2000/svg";
let timer = null;
let selectedEdge = null; // "from|to" of the edge whose detail is shown

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

async function api(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await r.text();
  let json = null;
  try { json = JSON.parse(body); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new Error(`${path}: ${r.status} ${(json && json.error) || body}`);
  return json;
}

function table(headers, rows, attrs) {
  return h("table", attrs || {},
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", {}, x)))),
    h("tbody", {}, rows));
}

function fmtRate(x, unit) {
  if (!isFinite(x) || x <= 0) return `0 ${unit}`;
  const steps = [[1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [f, p] of steps) if (x >= f) return `${(x / f).toFixed(1)} ${p}${unit}`;
  return `${x < 10 ? x.toFixed(1) : Math.round(x)} ${unit}`;
}

function fmtDuration(sec) {
  const neg = sec < 0; sec = Math.abs(sec);
  const d = Math.floor(sec / 86400), hh = Math.floor((sec % 86400) / 3600), m = Math.floor((sec % 3600) / 60);
  const t = d > 0 ? `${d}d ${hh}h` : hh > 0 ? `${hh}h ${m}m` : `${m}m ${Math.floor(sec % 60)}s`;
  return neg ? `expired ${t} ago` : `in ${t}`;
}

// ---- traffic: counters per edge summed over reporting nodes, rates between readings

function edgeKey(from, to) { return `${from}|${to}`; }

function trafficRates(now) {
  // Rates come with the counters: each destination agent computes its own per interval.
  const rates = new Map();
  for (const e of now.edges) {
    rates.set(edgeKey(e.source, e.destination), {
      counters: e,
      connPerS: e.per_second.connections,
      deniedPerS: e.per_second.denied,
      bytesPerS: e.per_second.bytes,
    });
  }
  return rates;
}

// ---- pages

const pages = {
  async topology(main) {
    const [graph, traffic] = await Promise.all([api("/v1/graph"), api("/v1/traffic")]);
    const rates = trafficRates(traffic);
    // Edges: every rule-decided pair, plus pairs with traffic that the default decided.
    const edges = graph.edges.map((e) => ({
      from: e.from, to: e.to, rule: e.rule,
      decision: e.audit ? "audit" : e.allowed ? "allow" : "deny",
    }));
    const known = new Set(edges.map((e) => edgeKey(e.from, e.to)));
    const nodeIds = new Set(graph.nodes.map((n) => n.id));
    for (const [k, r] of rates) {
      if (known.has(k)) continue;
      const c = r.counters;
      edges.push({ from: c.source, to: c.destination, rule: "default",
        decision: graph.default === "allow" ? "allow" : "deny" });
      for (const id of [c.source, c.destination]) nodeIds.add(id);
    }
    const nodes = [...nodeIds].sort();
    const W = 760, H = 540, R = Math.min(W, H) / 2 - 70, cx = W / 2, cy = H / 2;
    const pos = new Map(nodes.map((id, i) => {
      const a = (2 * Math.PI * i) / Math.max(1, nodes.length) - Math.PI / 2;
      return [id, { x: cx + R * Math.cos(a), y: cy + R * Math.sin(a) }];
    }));
    const svg = s("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, id: "topology" });
    const defs = s("defs", {});
    for (const d of ["allow", "deny", "audit"]) {
      defs.append(s("marker", { id: `arrow-${d}`, viewBox: "0 0 10 10", refX: 10, refY: 5,
        markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse", class: d },
      s("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: `var(--${d})` })));
    }
    svg.append(defs);
    const detail = h("div", { class: "detail", id: "edge-detail" },
      h("p", { class: "muted" }, "Click an edge for the rule that decides it and its counters."));
    for (const e of edges) {
      const a = pos.get(e.from), b = pos.get(e.to);
      if (!a || !b) continue;
      // A curve bent to one side, so A->B and B->A stay apart; ends short of the circles.
      const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
      const ux = dx / len, uy = dy / len, r0 = 26;
      const x1 = a.x + ux * r0, y1 = a.y + uy * r0, x2 = b.x - ux * r0, y2 = b.y - uy * r0;
      const mx = (x1 + x2) / 2 - uy * 28, my = (y1 + y2) / 2 + ux * 28;
      const key = edgeKey(e.from, e.to);
      const r = rates.get(key);
      const path = s("path", {
        d: `M ${x1} ${y1} Q ${mx} ${my} ${x2} ${y2}`,
        class: `edge ${e.decision}${selectedEdge === key ? " selected" : ""}`,
        "marker-end": `url(#arrow-${e.decision})`,
        "data-from": e.from, "data-to": e.to, "data-decision": e.decision,
        onclick: () => { selectedEdge = key; showEdge(detail, e, rates.get(key)); },
      }, s("title", {}, `${e.from} → ${e.to}: ${e.decision} (${e.rule})`));
      svg.append(path);
      if (r) {
        const c = r.counters;
        const label = `${c.opened} conn (${fmtRate(r.connPerS, "/s")}) · ${fmtRate(r.bytesPerS, "B/s")}` +
          (c.denied > 0 ? ` · ${c.denied} denied (${fmtRate(r.deniedPerS, "/s")})` : "");
        svg.append(s("text", { x: mx, y: my - 4, class: "rate", "text-anchor": "middle",
          "data-edge": key }, label));
      }
      if (selectedEdge === key) showEdge(detail, e, r);
    }
    for (const id of nodes) {
      const p = pos.get(id);
      const info = graph.nodes.find((n) => n.id === id);
      svg.append(s("g", { class: `node${info && !info.known ? " unknown" : ""}`, "data-service": id },
        s("circle", { cx: p.x, cy: p.y, r: 24 }),
        s("text", { x: p.x, y: p.y + 42 }, id)));
    }
    main.replaceChildren(
      h("h2", {}, `Access graph: default ${graph.default}${graph.audit ? " (audit mode)" : ""}, rules version ${graph.version}`),
      h("p", { class: "muted" }, "Green: allowed; red dashed: denied; orange dotted: audited deny. " +
        "Counts and rates are what the destination agents counted (every agent shares its own every 5 s)."),
      h("div", { class: "topo" }, svg, detail));
  },

  async services(main) {
    const list = await api("/v1/catalog/services");
    const sections = [];
    for (const svc of list) {
      const inst = await api(`/v1/catalog/service/${encodeURIComponent(svc.name)}?ns=${encodeURIComponent(svc.namespace)}`);
      sections.push(h("h2", {}, `${svc.namespace}/${svc.name}`, " ",
        h("span", { class: "muted" }, `${svc.passing} of ${svc.instances} passing`)));
      sections.push(table(["node", "id", "address", "health", "tags"], inst.map((i) =>
        h("tr", { "data-instance": `${i.node}/${i.id}` },
          h("td", {}, i.node), h("td", {}, i.id), h("td", {}, `${i.address}:${i.port}`),
          h("td", { class: `health-${i.health}` }, i.health), h("td", {}, (i.tags || []).join(", "))))));
    }
    main.replaceChildren(...(sections.length ? sections : [h("p", { class: "muted" }, "No services registered.")]));
  },

  async members(main) {
    const [members, self, traffic] = await Promise.all([api("/v1/members"), api("/v1/agent/self"), api("/v1/traffic")]);
    const info = new Map(traffic.nodes.map((n) => [n.node, n]));
    members.sort((a, b) => a.node.localeCompare(b.node));
    const expiry = (n) => {
      if (!n || n.cert_expires_ms === null || n.cert_expires_ms === undefined) return ["", "—"];
      const secs = (n.cert_expires_ms - Date.now()) / 1000;
      return [secs < 86400 ? "warn" : "", fmtDuration(secs)];
    };
    main.replaceChildren(
      h("h2", {}, `${members.length} members`),
      table(["node", "gossip address", "status", "incarnation", "version", "certificates expire"], members.map((m) => {
        const n = info.get(m.node);
        const [cls, when] = expiry(n);
        return h("tr", { "data-member": m.node },
          h("td", {}, m.node, m.node === self.node_name ? h("span", { class: "muted" }, " (this agent)") : null),
          h("td", {}, m.address), h("td", { class: `status-${m.status}` }, m.status),
          h("td", {}, m.incarnation), h("td", { "data-version": n ? n.version : "" }, n ? n.version : "—"),
          h("td", { class: cls }, when));
      })),
      h("p", { class: "muted" }, `This agent: ${self.node_name}, version ${self.version}, up ${fmtDuration(self.uptime_seconds).replace("in ", "")}, data ${self.addresses.data}. ` +
        "Versions and certificate expiry come from each agent's replicated summary (every 5 s when its traffic changes, else each minute)."));
  },

  async intentions(main) {
    const [list, traffic] = await Promise.all([api("/v1/intentions"), api("/v1/traffic")]);
    const hits = new Map();
    for (const r of traffic.rules) hits.set(r.rule, (hits.get(r.rule) || 0) + r.hits);
    const rules = list.entries.flatMap((e) => e.sources);
    rules.sort((a, b) => b.precedence - a.precedence ||
      b.precedence_detail.localeCompare(a.precedence_detail, undefined, { numeric: true }));
    const result = h("div", { id: "check-result" });
    const src = h("input", { name: "src", placeholder: "source, e.g. default/web", required: "" });
    const dst = h("input", { name: "dst", placeholder: "destination, e.g. default/db", required: "" });
    const form = h("form", { class: "check", id: "check", onsubmit: async (ev) => {
      ev.preventDefault();
      try {
        const v = await api(`/v1/intentions/check?src=${encodeURIComponent(src.value)}&dst=${encodeURIComponent(dst.value)}`);
        const line = v.rule ? ruleLine(v.rule) : `default ${v.action} (no intention matches)`;
        result.replaceChildren(h("span", { class: v.allowed ? "allow" : "deny" },
          v.allowed ? (v.audit ? "allowed (audit: would deny)" : "allowed") : "denied"), ` by ${line}`);
      } catch (e) { result.replaceChildren(h("span", { class: "error" }, e.message)); }
    } }, h("strong", {}, "Would this connect? "), src, dst, h("button", { type: "submit" }, "Check"), result);
    const defaultHits = traffic.rules.filter((r) => r.rule === "default").reduce((n, r) => n + r.hits, 0);
    main.replaceChildren(
      h("h2", {}, `${rules.length} rules, default ${list.default}${list.audit ? " (audit mode)" : ""}, version ${list.version}`),
      form,
      table(["precedence", "source", "destination", "action", "hits here", "written at", "description"],
        rules.map((r) => h("tr", {},
          h("td", {}, r.precedence_detail), h("td", {}, r.source), h("td", {}, r.destination),
          h("td", { class: r.action }, r.action + (r.mode === "audit" ? " (audit)" : "")),
          h("td", {}, hits.get(ruleLine(r)) || 0), h("td", {}, r.origin), h("td", {}, r.description || "")))),
      h("p", { class: "muted" }, `Decided by the default here: ${defaultHits}. Hits count the connections this agent decided as a destination.`),
      list.problems.dir.length + list.problems.rules.length > 0
        ? h("div", {}, h("h2", { class: "warn" }, "Problems"), h("ul", {},
          [...list.problems.dir, ...list.problems.rules].map((p) => h("li", {}, p))))
        : null);
  },

  async certificates(main) {
    const certs = await api("/v1/ca/status");
    main.replaceChildren(
      h("h2", {}, "Trust bundle, this agent's intermediate and leaves"),
      table(["kind", "SPIFFE ID / subject", "serial", "valid from", "valid until", "expires"], certs.map((c) => {
        const soon = c.seconds_to_expiry < 0 || c.fraction_used > 0.8;
        return h("tr", { "data-kind": c.kind },
          h("td", {}, c.kind), h("td", {}, c.spiffe_id || c.subject), h("td", {}, c.serial),
          h("td", {}, c.not_before), h("td", {}, c.not_after),
          h("td", { class: soon ? "warn" : "" }, fmtDuration(c.seconds_to_expiry),
            soon ? (c.seconds_to_expiry < 0 ? " — EXPIRED" : " — renew soon") : ""));
      })));
  },
};

function ruleLine(r) {
  const audit = r.mode === "audit" ? ", audit" : "";
  return `${r.source} => ${r.destination} (${r.action}${audit}, precedence ${r.precedence_detail}, ${r.origin})`;
}

async function showEdge(detail, e, r) {
  const c = r ? r.counters : null;
  const rows = [h("h2", {}, `${e.from} → ${e.to}`),
    h("p", {}, h("span", { class: e.decision }, e.decision), ` by ${e.rule}`)];
  try {
    const v = await api(`/v1/intentions/check?src=${encodeURIComponent(e.from)}&dst=${encodeURIComponent(e.to)}`);
    if (v.rule) {
      rows.push(table(["", ""], [
        h("tr", {}, h("td", {}, "rule"), h("td", {}, `${v.rule.source} => ${v.rule.destination}`)),
        h("tr", {}, h("td", {}, "action"), h("td", {}, v.rule.action + (v.rule.mode === "audit" ? " (audit)" : ""))),
        h("tr", {}, h("td", {}, "precedence"), h("td", {}, v.rule.precedence_detail)),
        h("tr", {}, h("td", {}, "written at"), h("td", {}, v.rule.origin)),
      ]));
    } else rows.push(h("p", {}, `No intention matches: the default (${v.action}) decides.`));
  } catch (err) { rows.push(h("p", { class: "error" }, err.message)); }
  if (c) {
    rows.push(table(["counter", "total", "per second"], [
      ["connections", c.opened, fmtRate(r.connPerS, "/s")],
      ["denied", c.denied, fmtRate(r.deniedPerS, "/s")],
      ["failed", c.failed, ""], ["open now", c.active, ""],
      ["bytes to destination", c.bytes_to_destination, ""],
      ["bytes from destination", c.bytes_from_destination, fmtRate(r.bytesPerS, "B/s")],
      ["counted by", (c.reported_by || []).join(", "), ""],
    ].map(([k, v, p]) => h("tr", {}, h("td", {}, k), h("td", {}, v), h("td", {}, p)))));
  } else rows.push(h("p", { class: "muted" }, "No traffic counted on this edge."));
  detail.replaceChildren(...rows);
}

async function render() {
  const page = (location.hash || "#topology").slice(1);
  const fn = pages[page] || pages.topology;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  const main = document.getElementById("main");
  try {
    await fn(main);
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = page;
  } catch (e) {
    main.replaceChildren(h("p", { class: "error", id: "error" }, e.message));
  }
}

function schedule() {
  clearInterval(timer);
  // The intentions page keeps its check box; the others refresh.
  timer = setInterval(() => { if (location.hash !== "#intentions") render(); }, REFRESH_MS);
}

window.addEventListener("hashchange", () => { selectedEdge = null; render(); schedule(); });
window.addEventListener("DOMContentLoaded", async () => {
  try {
    const self = await api("/v1/agent/self");
    document.getElementById("agent").textContent = `agent ${self.node_name} · ${self.version}`;
  } catch (_) { /* the page shows the error */ }
  await render();
  schedule();
});
