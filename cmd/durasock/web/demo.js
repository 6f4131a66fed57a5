// The durasock demo chat. Everything it shows comes from the servers: the node
// a page is on, its bus state, acks of sent messages, "published" notices and
// receipts relayed from the pages that displayed a message.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const path = document.documentElement.dataset.path || "/socket.io/";
  const short = (node) => (node || "?").slice(0, 6);

  function line(text, cls) {
    const div = document.createElement("div");
    div.className = cls || "sys";
    div.textContent = text;
    append(div);
    return div;
  }
  function append(el) {
    const log = $("log");
    const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    log.appendChild(el);
    if (atEnd) log.scrollTop = log.scrollHeight;
  }

  if (typeof window.io !== "function") {
    $("pill").textContent = "no client";
    $("pill").dataset.state = "offline";
    if (!$("missing")) line("durasock: the Socket.IO browser client did not load from " + path + "socket.io.min.js", "sys warn");
    return;
  }

  // A page id per browser tab: receipts and presence replies are addressed to it,
  // so they find the page again after it reconnects to another node.
  let page = sessionStorage.getItem("durasock-page");
  if (!page) {
    page = "p" + Math.random().toString(36).slice(2, 12);
    sessionStorage.setItem("durasock-page", page);
  }
  const params = new URLSearchParams(location.search);
  $("name").value = params.get("name") || sessionStorage.getItem("durasock-name") || "guest" + Math.floor(Math.random() * 1000);
  if (params.get("room")) $("room").value = params.get("room");

  // ?node=NAME asks a load balancer that understands it (durasock cluster) for a node.
  const query = params.get("node") ? { node: params.get("node") } : {};
  const socket = io({ path, query });

  let me = { node: "", room: "", name: "" };
  let bus = null; // null: no cluster (one process)
  let connectedOnce = false;
  let lostAt = 0;
  const members = new Map(); // page -> {name, node, sid, leaving}
  const sent = new Map(); // message id -> record of a message this page sent
  let seq = 0;
  let prevNodes = null;

  // ---- status: pill and facts ----
  function render() {
    const pill = $("pill");
    let state, text;
    if (!socket.connected) {
      state = connectedOnce ? "offline" : "connecting";
      text = connectedOnce ? "offline · reconnecting" : "connecting…";
    } else if (bus && bus.state !== "connected") {
      state = "degraded";
      text = "Redis unreachable · messages queue";
    } else {
      state = "online";
      text = "online";
    }
    pill.dataset.state = state;
    pill.textContent = text;
    $("node").textContent = me.node ? short(me.node) : "–";
    $("node").title = me.node;
    $("transport").textContent = socket.connected && socket.io.engine ? socket.io.engine.transport.name : "–";
    if (!bus) {
      $("bus").textContent = me.node ? "none (one process)" : "–";
    } else {
      let t = bus.state;
      if (bus.outbox > 0 && (bus.state !== "connected" || bus.outbox_age_ms >= 1000)) t += ` · ${bus.outbox} queued` + (bus.outbox_age_ms >= 1000 ? ` (oldest ${Math.round(bus.outbox_age_ms / 1000)} s)` : "");
      if (bus.nodes) t += ` · ${bus.nodes.length} node${bus.nodes.length === 1 ? "" : "s"}`;
      $("bus").textContent = t;
    }
    renderMembers();
  }

  function renderMembers() {
    const el = $("here");
    if (!me.room) { el.textContent = "not in a room"; el.dataset.count = "0"; return; }
    const names = [`${me.name} (you, ${short(me.node)})`];
    for (const m of members.values()) if (!m.leaving) names.push(`${m.name} (${short(m.node)})`);
    el.dataset.count = String(names.length);
    let t = `${names.length} in ${me.room}: ${names.join(", ")}`;
    if (bus && bus.state !== "connected") t += " · members on other nodes may join or leave unseen until Redis is back";
    el.textContent = t;
  }

  // ---- connection ----
  socket.on("connect", () => {
    if (connectedOnce) {
      const away = lostAt ? Math.round((Date.now() - lostAt) / 1000) : 0;
      line(`reconnected after ${away} s` + (socket.recovered ? " · session recovered, missed messages replayed" : " · new session"));
      // A new session missed what happened meanwhile: the members answer
      // the join below again ("here").
      if (!socket.recovered) members.clear();
    }
    connectedOnce = true;
    lostAt = 0;
    socket.emit("hello", hello);
    join(true);
    render();
  });
  socket.io.on("open", () => socket.io.engine.on("upgrade", render));
  socket.on("disconnect", (reason) => {
    lostAt = Date.now();
    line("connection lost (" + reason + "); reconnecting…", "sys warn");
    render();
  });
  // One line per outage, not one per attempt: the pill says the rest.
  socket.on("connect_error", () => {
    if (!lostAt) {
      lostAt = Date.now();
      line("cannot reach the server; retrying…", "sys warn");
    }
    render();
  });

  function hello(h) {
    if (!h || !h.node) return;
    const moved = me.node && me.node !== h.node;
    me.node = h.node;
    bus = h.bus || null;
    if (moved) line(`now on node ${short(h.node)}`);
    render();
  }
  socket.on("bus", (b) => {
    const was = bus && bus.state;
    bus = b;
    if (was && was !== b.state) {
      if (b.state === "connected") line("Redis is back: queued messages are being delivered");
      else line(`this node lost Redis (${b.state}): messages to other nodes queue in its outbox`, "sys warn");
    }
    pruneGoneNodes(b);
    for (const rec of sent.values()) if (rec.queued && !rec.published) status(rec);
    render();
  });

  // Members whose node left the cluster (killed, drained) are gone too. Only
  // while the bus is connected: during an outage every other node looks gone.
  function pruneGoneNodes(b) {
    if (b.state !== "connected" || !b.nodes) return;
    if (prevNodes) {
      for (const [p, m] of members) {
        if (prevNodes.includes(m.node) && !b.nodes.includes(m.node)) leaveLater(p, m, ` (node ${short(m.node)} is gone)`);
      }
    }
    prevNodes = b.nodes;
  }

  // ---- rooms and presence ----
  function join(rejoin) {
    const room = (rejoin && me.room) || $("room").value.trim() || "lobby";
    const name = (rejoin && me.name) || $("name").value.trim() || "guest";
    socket.emit("join", { room, name, page }, (res) => {
      if (!res || res.error) { line("join refused: " + ((res && res.error) || "no answer"), "sys warn"); return; }
      const renamed = me.room === res.room && me.name && me.name !== res.name;
      const moved = me.room !== res.room;
      if (moved) members.clear();
      if (renamed) line(`you are now ${res.name}`);
      else if (moved || !rejoin) line(`you joined ${res.room} on node ${short(res.node)}`);
      me = { node: res.node, room: res.room, name: res.name };
      sessionStorage.setItem("durasock-name", res.name);
      render();
    });
  }
  $("joinform").addEventListener("submit", (e) => { e.preventDefault(); join(false); });

  // A page that reconnects elsewhere leaves (or its node goes) and joins on
  // another node, in either order: wait a little before saying it left.
  function leaveLater(p, m, why) {
    if (m.leaving) return;
    m.leaving = setTimeout(() => {
      if (members.get(p) !== m) return;
      members.delete(p);
      line(`${m.name} left${why}`);
      render();
    }, 3000);
  }

  socket.on("presence", (p) => {
    if (p.page === page || p.room !== me.room) return;
    const known = members.get(p.page);
    switch (p.type) {
      case "join":
      case "here":
        if (known) {
          if (known.leaving) { clearTimeout(known.leaving); known.leaving = 0; }
          if (known.node !== p.node && p.type === "join") line(`${p.name} reconnected via node ${short(p.node)}`);
          Object.assign(known, { name: p.name, node: p.node, sid: p.sid });
        } else {
          members.set(p.page, { name: p.name, node: p.node, sid: p.sid, leaving: 0 });
          if (p.type === "join") line(`${p.name} joined (node ${short(p.node)})`);
        }
        if (p.type === "join") socket.emit("here", { to: p.page });
        break;
      case "rename":
        if (known) known.name = p.name;
        else members.set(p.page, { name: p.name, node: p.node, sid: p.sid, leaving: 0 });
        line(`${p.old} is now ${p.name}`);
        break;
      case "leave":
        if (known && known.sid === p.sid) leaveLater(p.page, known, "");
        break;
    }
    render();
  });

  // ---- messages ----
  socket.on("chat", (m) => {
    if (m.page === page) return;
    const div = document.createElement("div");
    div.className = "msg";
    div.dataset.from = m.page;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = m.name;
    const via = document.createElement("span");
    via.className = "via";
    via.textContent = "via " + short(m.node);
    div.append(who, document.createTextNode(m.text), via);
    const late = Date.now() - m.sent_at;
    if (late > 3000) {
      const l = document.createElement("span");
      l.className = "late";
      l.textContent = `arrived ${Math.round(late / 1000)} s after it was sent`;
      div.append(l);
    }
    append(div);
    socket.emit("receipt", { id: m.id, to: m.page });
  });

  // A message the node queued is still queued until the node says it reached
  // Redis ("published"), or until its bus is connected with an empty outbox
  // (the notice goes to the socket that sent it, which may have reconnected).
  const stillQueued = (rec) => rec.queued && !rec.published && !(bus && bus.state === "connected" && bus.outbox === 0);

  function status(rec) {
    let s, t;
    const n = rec.receivers.size;
    const nodes = new Set(rec.receivers.values()).size;
    if (rec.error) { s = "error"; t = "✗ " + rec.error; }
    else if (n > 0) {
      s = "delivered";
      t = `✓ delivered to ${n} client${n === 1 ? "" : "s"} on ${nodes} node${nodes === 1 ? "" : "s"}`;
      if (rec.firstReceipt - rec.at > 3000) t += ` · after ${Math.round((rec.firstReceipt - rec.at) / 1000)} s`;
      if (stillQueued(rec)) t += " · still queued for other nodes";
    } else if (!rec.acked) { s = "sending"; t = socket.connected ? "sending…" : "waiting for the connection…"; }
    else if (stillQueued(rec)) {
      s = "queued";
      t = bus && bus.state === "connected"
        ? "⏳ in node " + short(rec.node) + "'s outbox, on its way to Redis"
        : "⏳ queued on node " + short(rec.node) + ": Redis is unreachable; delivered when it is back";
    }
    else {
      s = "sent";
      const others = [...members.values()].filter((m) => !m.leaving).length;
      t = others ? `sent · waiting for ${others} receipt${others === 1 ? "" : "s"}` : "sent · no one else in the room";
    }
    rec.st.dataset.status = s;
    rec.st.textContent = t;
    rec.div.dataset.status = s;
    rec.div.dataset.receivers = String(n);
    rec.div.dataset.nodes = String(nodes);
  }

  $("form").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (!text) return;
    if (!me.room) { line("join a room first", "sys warn"); return; }
    $("text").value = "";
    const id = Date.now().toString(36) + "-" + ++seq;
    const div = document.createElement("div");
    div.className = "msg mine";
    div.dataset.id = id;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = me.name;
    const st = document.createElement("span");
    st.className = "st";
    div.append(who, document.createTextNode(text), st);
    append(div);
    const rec = { id, div, st, at: Date.now(), acked: false, queued: false, published: false, node: "", error: "", receivers: new Map(), firstReceipt: 0 };
    sent.set(id, rec);
    if (sent.size > 500) sent.delete(sent.keys().next().value);
    status(rec);
    socket.emit("chat", { room: me.room, text, id }, (res) => {
      rec.acked = true;
      if (!res || res.error) rec.error = (res && res.error) || "no answer";
      else { rec.queued = res.queued; rec.node = res.node; }
      status(rec);
    });
  });

  socket.on("published", (p) => {
    for (const id of p.ids || []) {
      const rec = sent.get(id);
      if (!rec) continue;
      rec.published = true;
      if (p.dropped) rec.error = "dropped by a bound of the outbox before Redis was back";
      status(rec);
    }
  });
  socket.on("receipt", (r) => {
    const rec = sent.get(r.id);
    if (!rec || r.page === page) return;
    if (!rec.firstReceipt) rec.firstReceipt = Date.now();
    rec.receivers.set(r.page, r.node);
    status(rec);
  });

  // ---- typing ----
  const typers = new Map();
  socket.on("typing", (m) => {
    if (m.page === page) return;
    clearTimeout(typers.get(m.name));
    typers.set(m.name, setTimeout(() => { typers.delete(m.name); showTyping(); }, 2000));
    showTyping();
  });
  function showTyping() { $("typing").textContent = typers.size ? [...typers.keys()].join(", ") + " typing…" : ""; }
  let lastTyping = 0;
  $("text").addEventListener("input", () => {
    const now = Date.now();
    if (me.room && socket.connected && now - lastTyping > 1000) { lastTyping = now; socket.volatile.emit("typing"); }
  });

  setInterval(() => { for (const rec of sent.values()) if (!rec.acked) status(rec); }, 1000);
  render();
})();
