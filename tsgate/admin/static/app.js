// tsgate status page: fetches the admin JSON endpoints every 2 s and fills the
// tables. Everything is inserted with textContent (never innerHTML): SNI names
// and error messages come from clients and must not become markup.
"use strict";

const REFRESH_MS = 2000;
const MAX_ROWS = 200;

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
  return clusters.map(c => {
    // each endpoint with its state (healthy / ejected / unhealthy) and live connections
    const eps = c.endpoints.map(e => e.address + ":" + e.port +
      (e.status ? " [" + e.status + ", " + e.active_connections + " live]" : ""));
    const listed = c.endpoints.map(e => e.address + ":" + e.port);
    for (const addr of Object.keys(c.upstreams)) if (!listed.includes(addr)) eps.push(addr);
    const fails = c.stats.upstream_cx_connect_fail || 0;
    const live = el("td", c.active_connections, "num");
    live.dataset.cluster = c.name;
    const name = el("td", c.name);
    if (c.policy && c.policy.length) name.title = c.policy.join("\n");
    return row([name, c.resolution + ", " + c.lb_policy, eps.join(", ") || "(DNS at connect)",
                live, el("td", fails, "num")]);
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
    const [l, c, conn, errs] = await Promise.all([
      getJSON("listeners?format=json"), getJSON("clusters?format=json"),
      getJSON("connections"), getJSON("errors"),
    ]);
    fill(document.querySelector("#routes tbody"), routeRows(l.listeners));
    fill(document.querySelector("#connections tbody"), connectionRows(conn.connections));
    document.getElementById("connections-more").textContent =
      conn.total > MAX_ROWS ? "showing " + MAX_ROWS + " of " + conn.total : "";
    fill(document.querySelector("#clusters tbody"), clusterRows(c.clusters));
    document.getElementById("errors").replaceChildren(...errorItems(errs.errors));
    document.getElementById("total-connections").textContent = conn.total;
    document.getElementById("total-listeners").textContent = l.listeners.length;
    document.getElementById("total-clusters").textContent = c.clusters.length;
    status.textContent = "updated " + new Date().toLocaleTimeString();
    status.className = "muted";
  } catch (err) {
    status.textContent = "refresh failed: " + err.message;
    status.className = "error";
  }
}

refresh();
setInterval(refresh, REFRESH_MS);

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
