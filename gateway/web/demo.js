// The demo page: a chat across the cluster on the client library.
// Query parameters: `key` (who you are; default a random guest) and
// `channels` (comma-separated, joined at start; default `lobby`).

import { Client } from "/client.js";

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const key = params.get("key") || `guest-${Math.random().toString(36).slice(2, 6)}`;
const initial = (params.get("channels") || "lobby").split(",").filter(Boolean);

const client = new Client(location.origin, { key });
/** Node id -> URL, from every node list seen (a dead node stays named). */
const nodeUrls = new Map();
let selected = null;

const tokenInput = $("#token");
tokenInput.value = localStorage.getItem("gateway-token") ?? "";
tokenInput.addEventListener("change", () => localStorage.setItem("gateway-token", tokenInput.value));

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  e.append(...children);
  return e;
}

function short(node) {
  return node ? node.slice(0, 8) : "?";
}

/** "ab12cd34 (10.0.0.5:8080)": a node as a person can tell them apart. */
function nodeLabel(node) {
  const url = nodeUrls.get(node);
  return url ? `${short(node)} (${new URL(url).host})` : short(node);
}

function log(text) {
  const list = $("#log");
  list.prepend(el("li", {}, `${new Date().toLocaleTimeString()} ${text}`));
  while (list.children.length > 100) list.lastChild.remove();
}

function banner(text, bad = false, action = null) {
  const b = $("#banner");
  b.replaceChildren(text);
  if (action) b.append(" ", action);
  b.className = bad ? "bad" : "";
  b.hidden = !text;
}

/** Calls the gateway's HTTP API on the node that served this page. */
async function api(method, path) {
  const headers = {};
  if (tokenInput.value) headers.authorization = `Bearer ${tokenInput.value}`;
  try {
    const r = await fetch(path, { method, headers });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(`${r.status} ${body.error ?? ""}: ${body.message ?? ""}`);
    log(`${method} ${path}: ${JSON.stringify(body)}`);
  } catch (e) {
    log(`${method} ${path} failed: ${e.message}`);
  }
}

// Connection.

client.on("status", ({ status }) => {
  const s = $("#status");
  s.textContent = status;
  s.className = `pill ${status}`;
  if (status === "reconnecting") banner("Connection lost: reconnecting…");
  if (status === "open") banner("");
});

client.on("connect", ({ conn, node, url, reconnected, restored }) => {
  $("#node").textContent = nodeLabel(node);
  $("#node").dataset.node = node;
  $("#node").title = node;
  $("#conn").textContent = conn;
  $("#key").textContent = client.key;
  const what = restored.channels.map((c) => `#${c}`).join(", ") || "no channel";
  log(`${reconnected ? "reconnected" : "connected"} to ${new URL(url).host} as ${conn}` +
    (reconnected ? `; restored ${what}, ${restored.keys.length} keys` : ""));
  for (const r of restored.refused) log(`#${r.channel} refused: ${r.code} ${r.message}`);
  renderNodes();
  renderChannels();
});

client.on("disconnect", ({ code, reason, byServer }) => {
  if (byServer) {
    const again = el("button", { onclick: () => client.connect() }, "connect again");
    banner(`Disconnected by the server: ${reason}`, true, again);
    log(`disconnected by the server (${code}): ${reason}`);
  } else {
    log(`connection lost (${code} ${reason || "no reason"})`);
  }
});

client.on("nodes", ({ nodes }) => {
  for (const n of nodes) nodeUrls.set(n.node, n.url);
  $("#node").textContent = nodeLabel(client.node);
  renderNodes();
  renderMembers();
  renderMessagesNodes();
});

client.on("key", ({ key, online }) => {
  renderKeys();
  log(`${key} is ${online ? "online" : "offline"}`);
});

client.on("direct", ({ from, data }) => {
  notice(`direct message from ${from.key ?? nodeLabel(from.node)}: ${JSON.stringify(data)}`);
});

client.on("channelclosed", ({ channel }) => {
  banner(`Channel #${channel} was closed by the server`, true);
  notice(`#${channel} was closed by the server`, channel);
  log(`#${channel} closed by the server`);
});

client.on("error", (e) => log(`error ${e.code}: ${e.message}`));

// Channels.

function join(name) {
  if (client.channel(name)) return select(name);
  const ch = client.subscribe(name, { presence: true });
  ch.on("state", () => renderChannels());
  ch.on("presence", () => {
    renderMembers();
    renderChannels();
    watchMembers(ch);
  });
  ch.on("join", ({ member }) => {
    renderMembers();
    renderChannels();
    watchMembers(ch);
    if (member.conn !== client.conn) notice(`${member.key} joined on ${nodeLabel(member.node)}`, name);
  });
  ch.on("leave", ({ member }) => {
    renderMembers();
    renderChannels();
    notice(`${member.key} left (${nodeLabel(member.node)})`, name);
  });
  ch.on("lost", ({ count, where }) => log(`#${name}: ${count} messages lost (${where})`));
  ch.ready.catch((e) => log(`#${name} refused: ${e.code} ${e.message}`));
  (async () => {
    for await (const msg of ch) showMessage(msg);
  })().catch(() => {});
  if (!selected) selected = name;
  renderChannels();
  renderMembers();
  return ch;
}

function select(name) {
  selected = name;
  renderChannels();
  renderMembers();
}

function watchMembers(ch) {
  const keys = [...ch.members.values()].map((m) => m.key);
  client.watch(keys).then(renderKeys, () => {});
}

function renderChannels() {
  const list = $("#channels");
  const shown = new Set();
  for (const ch of client.channels) shown.add(ch.name);
  // Channels closed or refused stay listed, crossed out.
  for (const li of list.querySelectorAll("li")) {
    if (!shown.has(li.dataset.channel) && !li.classList.contains("gone")) {
      li.classList.add("gone", li.dataset.state === "subscribed" || li.dataset.state === "pending" ? "closed" : li.dataset.state);
    }
  }
  for (const ch of client.channels) {
    let li = list.querySelector(`li[data-channel="${CSS.escape(ch.name)}"]`);
    if (!li || li.classList.contains("gone")) {
      li?.remove();
      li = el("li", { "data-channel": ch.name, onclick: () => select(ch.name) },
        el("span", { class: "name" }, `#${ch.name}`),
        el("span", { class: "state" }),
        el("button", {
          class: "danger close-channel",
          title: "DELETE /channels/{channel}: close it for every subscriber on every node",
          onclick: (e) => {
            e.stopPropagation();
            api("DELETE", `/channels/${encodeURIComponent(ch.name)}`);
          },
        }, "close"));
      list.append(li);
    }
    li.dataset.state = ch.state;
    li.className = ch.state;
    li.querySelector(".state").textContent =
      ch.state === "subscribed" ? `${ch.members.size} here` : ch.state;
  }
  for (const li of list.querySelectorAll("li.gone")) {
    li.classList.toggle("selected", false);
    li.querySelector(".state").textContent = li.classList.contains("refused") ? "refused" : "closed";
  }
  for (const li of list.querySelectorAll("li:not(.gone)")) {
    li.classList.toggle("selected", li.dataset.channel === selected);
  }
  $("#current-channel").textContent = selected ? `#${selected}` : "";
}

function renderMembers() {
  const ch = selected && client.channel(selected);
  $("#presence-channel").textContent = selected ? `#${selected}` : "";
  const list = $("#members");
  list.replaceChildren();
  if (!ch) return;
  const members = [...ch.members.values()].sort((a, b) => a.key.localeCompare(b.key));
  for (const m of members) {
    list.append(el("li", { "data-conn": m.conn, "data-key": m.key, "data-node": m.node },
      el("span", { class: "who" }, m.key + (m.conn === client.conn ? " (you)" : "")),
      el("span", { class: "where", title: m.conn }, `on ${nodeLabel(m.node)}`),
      el("button", {
        class: "danger kick",
        title: "DELETE /connections/{id}: disconnect this connection, wherever it is",
        onclick: () => api("DELETE", `/connections/${encodeURIComponent(m.conn)}`),
      }, "kick")));
  }
}

function renderKeys() {
  const list = $("#keys");
  list.replaceChildren();
  for (const [k, online] of [...client.keys].sort()) {
    const state = online ? "online" : "offline";
    list.append(el("li", { class: state, "data-key": k, "data-online": String(online) },
      el("span", {}, k), el("span", { class: "state" }, state)));
  }
}

function renderNodes() {
  const list = $("#nodes");
  list.replaceChildren();
  for (const [node, url] of nodeUrls) {
    const live = client.nodes.includes(new URL(url).origin);
    list.append(el("li", {
      class: node === client.node ? "current" : live ? "" : "gone",
      "data-node": node,
      title: node,
    }, `${short(node)} ${new URL(url).host}`));
  }
}

// Messages.

function showMessage({ channel, from, data }) {
  const text = typeof data?.text === "string" ? data.text : JSON.stringify(data);
  append(el("div", {
    class: "msg", "data-channel": channel, "data-node": from.node, "data-key": from.key ?? "",
  },
  el("span", { class: "ch" }, `#${channel} `),
  el("span", { class: "who" }, from.key ?? "server"),
  el("span", { class: "where" }, ` @ ${nodeLabel(from.node)} `),
  el("span", { class: "text" }, text)));
}

function renderMessagesNodes() {
  for (const m of document.querySelectorAll(".msg[data-node]")) {
    m.querySelector(".where").textContent = ` @ ${nodeLabel(m.dataset.node)} `;
  }
}

function notice(text, channel = "") {
  append(el("div", { class: "msg notice", "data-channel": channel }, text));
}

function append(node) {
  const box = $("#messages");
  const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
  box.append(node);
  while (box.children.length > 500) box.firstChild.remove();
  if (atEnd) box.scrollTop = box.scrollHeight;
}

// Forms.

$("#join-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("#join-input").value.trim();
  if (name) join(name);
  $("#join-input").value = "";
});

$("#send-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("#send-input").value;
  if (!selected || !text) return;
  client.publish(selected, { text }).catch((err) => log(`publish failed: ${err.code} ${err.message}`));
  $("#send-input").value = "";
});

$("#watch-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const k = $("#watch-input").value.trim();
  if (k) client.watch([k]).then(renderKeys, (err) => log(`watch failed: ${err.code} ${err.message}`));
  $("#watch-input").value = "";
});

for (const name of initial) join(name);
$("#key").textContent = key;

// For a console user (and the browser tests): the client and the page's
// own counters.
window.demo = { client, join, select };
