// tsgate status page: fetches /status (one summary: version, uptime, last reload,
// totals and rates, listeners, clusters, endpoints), one bounded page of
// /connections and /errors every 2 s, and fills the tables. The server sends at
// most MAX_ROWS connections, however many are open. Everything is inserted with
// textContent (never innerHTML): SNI names and error messages come from clients
// and must not become markup.
"use strict";

const REFRESH_MS = 2000;
const MAX_ROWS = 100;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) tr.appendChild(c instanceof Node ? c : el("td", c));
  return tr;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(url + ": HTTP " + r.status);
  return r.json();
}

function destinations(route) {
  return route.destinations.map(d => d.cluster + " (" + d.percent + "%)").join(", ");
}

function routeRows(listeners) {
  const rows = [];
  for (const l of listeners) {
    const chains = l.chains.map(c => [c.match, c.route]);
    if (l.tcp_route) chains.push([l.inspect ? "tcp (fallback)" : "tcp", l.tcp_route]);
    if (chains.length === 0) chains.push(["(none)", null]);
    for (const [match, route] of chains) {
      const live = el("td", route ? route.active_connections : 0, "num");
      if (route) live.dataset.route = route.name;
      const name = el("td");
      name.appendChild(el("code", route ? route.name : "-"));
      const tr = row([el("td", l.name), el("td", match), name,
                      el("td", route ? destinations(route) : "-"), live]);
      tr.dataset.listener = l.name;
      rows.push(tr);
    }
  }
  return rows;
}

function age(seconds) {
  if (seconds < 60) return seconds.toFixed(1) + " s";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function bytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
  if (n < 1073741824) return (n / 1048576).toFixed(1) + " MiB";
  return (n / 1073741824).toFixed(2) + " GiB";
}

function rate(value, unit) {
  return value === null || value === undefined ? "–" : value.toFixed(1) + " " + unit + "/s";
}

function connectionRows(conns) {
  return conns.slice(0, MAX_ROWS).map(c => {
    const route = c.route || "(choosing)";
    const tr = row([c.downstream, c.listener, c.sni || "-",
                    c.state ? route + " [" + c.state + "]" : route,
                    c.upstream || "-", el("td", age(c.duration), "num"),
                    el("td", c.bytes_received, "num"), el("td", c.bytes_sent, "num")]);
    tr.className = "connection";
    return tr;
  });
}

function clusterRows(clusters) {
  const rows = [];
  for (const c of clusters) {
    const fails = c.stats.upstream_cx_connect_fail || 0;
    const live = el("td", c.active_connections, "num");
    live.dataset.cluster = c.name;
    // the policy in force (tsgate.upstream.policy) as the name's tooltip
    const name = el("td", c.name);
    if (c.policy && c.policy.length) name.title = c.policy.join("\n");
    const tr = row([name, c.resolution + ", " + c.lb_policy, el("td", "all endpoints", "muted"),
                    live, el("td", bytes(c.bytes_received || 0), "num"),
                    el("td", bytes(c.bytes_sent || 0), "num"),
                    el("td", c.stats.upstream_cx_total || 0, "num"), el("td", fails, "num")]);
    tr.className = "cluster";
    rows.push(tr);
    // one row per endpoint: the table's, then DNS-resolved ones seen on live connections
    // each endpoint with its state (healthy / ejected / unhealthy)
    const eps = c.endpoints.map(e => ({ addr: e.address + ":" + e.port +
                                          (e.status ? " [" + e.status + "]" : ""),
                                        live: e.active_connections,
                                        rx: e.bytes_received || 0, tx: e.bytes_sent || 0 }));
    for (const [addr, n] of Object.entries(c.upstreams)) {
      if (c.endpoints.some(e => e.address + ":" + e.port === addr)) continue;
      const b = (c.upstream_bytes || {})[addr] || {};
      eps.push({ addr: addr, live: n, rx: b.bytes_received || 0, tx: b.bytes_sent || 0 });
    }
    if (eps.length === 0) {
      rows.push(row(["", "", el("td", "(DNS at connect, none open)", "muted"), "", "", "",
                     "", ""]));
    }
    for (const e of eps) {
      const n = el("td", e.live, "num");
      n.dataset.endpoint = c.name + " " + e.addr;
      const er = row(["", "", el("td", e.addr), n, el("td", bytes(e.rx), "num"),
                      el("td", bytes(e.tx), "num"), "", ""]);
      er.className = "endpoint";
      rows.push(er);
    }
  }
  return rows;
}

function summary(s) {
  document.getElementById("version").textContent = s.version;
  document.getElementById("uptime").textContent = age(s.uptime);
  const r = s.last_reload;
  const reload = document.getElementById("last-reload");
  if (!r) {
    reload.textContent = "none since start";
    reload.className = "muted";
  } else {
    reload.textContent = (r.ok ? "ok" : "REFUSED (" + r.errors + " error(s))") + ", " +
      r.warnings + " warning(s), " + new Date(r.time * 1000).toLocaleTimeString();
    reload.className = r.ok ? "" : "error";
  }
  const t = s.totals, k = s.rates_per_second;
  fill(document.querySelector("#totals tbody"), [
    row(["connections accepted", el("td", t.connections, "num"),
         el("td", rate(k.connections, "conn"), "num")]),
    row(["bytes from clients", el("td", bytes(t.bytes_received), "num"),
         el("td", rate(k.bytes_received === null ? null : k.bytes_received / 1024, "KiB"),
            "num")]),
    row(["bytes to clients", el("td", bytes(t.bytes_sent), "num"),
         el("td", rate(k.bytes_sent === null ? null : k.bytes_sent / 1024, "KiB"), "num")]),
    row(["upstream connect failures", el("td", t.upstream_connect_failures, "num"),
         el("td", rate(k.upstream_connect_failures, "fail"), "num")]),
    row(["no route (NR)", el("td", t.no_route, "num"), el("td", rate(k.no_route, "conn"),
                                                          "num")]),
  ]);
}

function listenerRows(listeners) {
  return listeners.map(l => {
    const n = el("td", l.active_connections, "num");
    n.dataset.listenerLive = l.name;
    return row([el("td", l.name), el("td", l.address), l.protocols.join(","), n]);
  });
}

function errorItems(errors) {
  if (errors.length === 0) return [el("li", "none", "muted")];
  return errors.slice(0, 50).map(e => {
    const li = el("li");
    li.appendChild(el("span", e.iso + " ", "muted"));
    li.appendChild(el("span", e.message, "error"));
    return li;
  });
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const [s, conn, errs] = await Promise.all([
      getJSON("status"), getJSON("connections?limit=" + MAX_ROWS), getJSON("errors"),
    ]);
    summary(s);
    fill(document.querySelector("#listeners tbody"), listenerRows(s.listeners));
    fill(document.querySelector("#routes tbody"), routeRows(s.listeners));
    fill(document.querySelector("#connections tbody"), connectionRows(conn.connections));
    document.getElementById("connections-more").textContent =
      conn.total > conn.connections.length
        ? "showing the " + conn.connections.length + " oldest of " + conn.total : "";
    fill(document.querySelector("#clusters tbody"), clusterRows(s.clusters));
    document.getElementById("errors").replaceChildren(...errorItems(errs.errors));
    document.getElementById("total-connections").textContent = s.active_connections;
    document.getElementById("total-listeners").textContent = s.listeners.length;
    document.getElementById("total-clusters").textContent = s.clusters.length;
    status.textContent = "updated " + new Date().toLocaleTimeString();
    status.className = "muted";
  } catch (err) {
    status.textContent = "refresh failed: " + err.message;
    status.className = "error";
  }
}

// --workers N: one row per worker process and a total (the section stays hidden
// on a gateway without workers, whose admin server has no /workers).
function workerRows(workers) {
  return workers.map(w => {
    const accepted = Object.entries(w.counters)
      .filter(([k]) => k.endsWith("downstream_cx_total")).reduce((a, [, v]) => a + v, 0);
    const state = w.retiring ? "retiring" : (w.draining ? "draining" : (w.ready ? "ready" : "starting"));
    const tr = row([el("td", w.id), el("td", w.pid), el("td", w.generation), el("td", state),
                    el("td", age(w.uptime), "num"), el("td", w.active_connections, "num"),
                    el("td", accepted, "num")]);
    tr.className = "worker";
    return tr;
  });
}

async function refreshWorkers() {
  const r = await fetch("workers", { cache: "no-store" });
  const section = document.getElementById("workers-section");
  if (!r.ok) { section.hidden = true; return; }
  const data = await r.json();
  section.hidden = false;
  fill(document.querySelector("#workers tbody"), workerRows(data.workers));
  const total = row([el("th", "total"), el("td", ""), el("td", ""),
                     el("td", data.total.workers + " workers"), el("td", ""),
                     el("td", data.total.active_connections, "num"), el("td", "")]);
  total.className = "worker-total";
  fill(document.querySelector("#workers tfoot"), [total]);
}

refresh();
setInterval(refresh, REFRESH_MS);
refreshWorkers().catch(() => {});
setInterval(() => refreshWorkers().catch(() => {}), REFRESH_MS);

// Authorization (AuthorizationPolicy denials, per-source limits): its own
// refresh, so a gateway without /authz leaves the other tables working.
function authzRows(view) {
  const rows = view.denied.map(d => [d.listener, d.source, "policy " + d.policy, d.count, d.iso])
    .concat(view.limited.map(d => [d.listener, d.source, "limit " + d.reason, d.count, d.iso]));
  if (rows.length === 0) return [row([el("td", "none", "muted")])];
  return rows.slice(0, MAX_ROWS).map(cells => {
    const tr = row(cells.slice(0, 3));
    tr.appendChild(el("td", cells[3], "num"));
    tr.appendChild(el("td", cells[4]));
    return tr;
  });
}

async function refreshAuthz() {
  try {
    const view = await getJSON("authz");
    fill(document.querySelector("#authz tbody"), authzRows(view));
    document.getElementById("authz-counters").textContent = Object.entries(view.counters)
      .map(([k, v]) => k + " " + v).join(" · ");
  } catch (err) {
    document.getElementById("authz-counters").textContent = "authz: " + err.message;
  }
}

refreshAuthz();
setInterval(refreshAuthz, REFRESH_MS);
