// The control panel of `durasock cluster`: polls /cluster/api/state every second.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let state = null;

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  }

  async function act(path) {
    try {
      const r = await fetch("/cluster/api/" + path, { method: "POST", headers: { "X-Durasock-Cluster": "1" } });
      if (!r.ok) alert((await r.json()).error);
    } catch (e) { alert(String(e)); }
    refresh();
  }

  function spark(values, color, max) {
    const c = el("canvas", { width: 150, height: 30 });
    const g = c.getContext("2d");
    const top = Math.max(max || 0, ...values, 1);
    g.strokeStyle = color;
    g.lineWidth = 1.5;
    g.beginPath();
    const step = 150 / (Math.max(values.length, 30) - 1);
    values.forEach((v, i) => {
      const x = 150 - (values.length - 1 - i) * step;
      const y = 29 - (v / top) * 27;
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
    return c;
  }
  const chart = (label, values, color, unit) => el("div", { class: "chart" },
    el("span", {}, `${label} ${fmt(values.length ? values[values.length - 1] : 0)}${unit}`), spark(values, color));
  const fmt = (v) => (v >= 100 ? Math.round(v) : Math.round(v * 10) / 10);

  function checkLine(c) {
    if (!c) return "checker: starting";
    if (!c.connected) return "checker: not connected";
    return `checker: received ${c.received} · waiting ${c.waiting} · duplicates ${c.duplicates}` + (c.joins > 1 ? ` · rejoined ${c.joins - 1}×` : "");
  }
  function badge(text, cls) { return el("span", { class: "badge " + (cls || "") }, text); }

  function render() {
    const r = state.redis;
    $("redis").replaceChildren(
      el("h2", {}, "Redis " + r.addr, r.running ? badge("running", "ok") : badge("down", "bad")),
      el("div", { class: "facts" }, r.running ? "every node's bus talks to this redis-server (append-only file on)" : "killed: nodes keep serving their own clients; messages for other nodes wait in each node's outbox"),
      el("div", { class: "buttons" }, r.running
        ? el("button", { class: "danger", onclick: () => act("redis/kill") }, "kill Redis (r)")
        : el("button", { onclick: () => act("redis/start") }, "start Redis (r)")));
    const links = state.nodes.map((n) => el("a", { href: "/?node=" + encodeURIComponent(n.name), target: "_blank", rel: "noopener" }, n.name));
    $("links").replaceChildren(...links.flatMap((a, i) => (i ? [" · ", a] : ["· on ", a])));
    const ck = state.checker || { rate: 0, nodes: {} };
    $("checker").replaceChildren(ck.rate
      ? `delivery checker: ${ck.rate} numbered events/s emitted through the nodes in turn: ${ck.accepted} accepted, ${ck.refused} refused. ` +
        "Each node's checker client counts the accepted ones that have not arrived (waiting: it grows while Redis is down and must return to 0) and those that arrived twice."
      : "delivery checker off (durasock cluster -ticks N turns it on)");
    $("nodes").replaceChildren(...state.nodes.map((n, i) => {
      const up = n.proc === "running" || n.proc === "draining";
      const procCls = n.proc === "running" ? (n.ready ? "ok" : "warn") : n.proc === "draining" ? "warn" : "bad";
      const busCls = n.bus === "connected" ? "ok" : n.bus ? "warn" : "";
      const s = n.samples || [];
      return el("div", { class: "card" },
        el("h2", {}, n.name, badge(n.proc + (n.proc === "running" && !n.ready ? " (not ready)" : ""), procCls), n.bus ? badge("bus " + n.bus, busCls) : ""),
        el("div", { class: "facts" }, `${n.id ? "id " + n.id.slice(0, 6) + " · " : ""}${n.addr} · ${n.clients} client${n.clients === 1 ? "" : "s"} · dropped ${n.dropped} · gaps ${n.gaps}` + (n.exit ? ` · last exit: ${n.exit}` : "")),
        chart("outbox", s.map((x) => x.outbox), "#d68910", ""),
        chart("lag", s.map((x) => x.lag_ms), "#c0392b", " ms"),
        chart("events/s", s.map((x) => x.eps), "#2d6cdf", ""),
        ck.rate ? chart("waiting", s.map((x) => x.waiting), "#8e44ad", "") : "",
        ck.rate ? el("div", { class: "facts check" }, checkLine(ck.nodes[n.name])) : "",
        el("div", { class: "buttons" },
          up ? el("button", { onclick: () => act(`node/${n.name}/drain`) }, `drain (${i + 1})`) : el("button", { onclick: () => act(`node/${n.name}/start`) }, `start (${i + 1})`),
          up ? el("button", { class: "danger", onclick: () => act(`node/${n.name}/kill`) }, `kill (Shift+${i + 1})`) : ""));
    }));
    $("events").replaceChildren(...state.events.slice().reverse().map((e) => el("li", {}, e)));
  }

  async function refresh() {
    try {
      const r = await fetch("/cluster/api/state");
      state = await r.json();
      render();
    } catch (e) { /* the launcher stopped; the next poll says so again */ }
  }

  document.addEventListener("keydown", (e) => {
    if (!state || e.target.tagName === "INPUT") return;
    if (e.key === "r") act(state.redis.running ? "redis/kill" : "redis/start");
    const digit = /^Digit([1-5])$/.exec(e.code);
    if (digit) {
      const n = state.nodes[Number(digit[1]) - 1];
      if (!n) return;
      const up = n.proc === "running" || n.proc === "draining";
      act(`node/${n.name}/` + (e.shiftKey ? "kill" : up ? "drain" : "start"));
    }
  });
  refresh();
  setInterval(refresh, 1000);
})();
