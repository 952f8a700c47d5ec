// camdet view: one WebSocket; pictures of the cameras on screen, statistics once a second.
"use strict";

const grid = document.getElementById("grid");
const large = document.getElementById("large");
const tiles = new Map(); // camera id -> {el, img, url, frames}
let cameras = [];
let socket = null;
let largeCamera = null;
let sentWatch = "";
const visible = new Set();

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const fmt = (v, unit = "") => (v === null || v === undefined ? "–" : `${v}${unit}`);

function text(el, value) {
  if (el.textContent !== value) el.textContent = value;
}

function makeTile(id) {
  const el = document.getElementById("tile").content.firstElementChild.cloneNode(true);
  el.dataset.camera = id;
  el.dataset.frames = "0";
  el.querySelector(".name").textContent = id;
  el.addEventListener("click", () => openLarge(id));
  grid.appendChild(el);
  observer.observe(el);
  return { el, img: el.querySelector("img"), url: null, frames: 0 };
}

const observer = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    const id = entry.target.dataset.camera;
    if (entry.isIntersecting) visible.add(id);
    else visible.delete(id);
  }
  sendWatch();
});

function watched() {
  if (document.hidden) return [];
  if (largeCamera !== null) return [largeCamera];
  return cameras.filter((id) => visible.has(id));
}

function sendWatch() {
  const list = watched();
  const key = JSON.stringify(list);
  if (socket && socket.readyState === WebSocket.OPEN && key !== sentWatch) {
    socket.send(JSON.stringify({ type: "watch", cameras: list }));
    sentWatch = key;
  }
}

function openLarge(id) {
  largeCamera = id;
  large.hidden = false;
  large.dataset.camera = id;
  large.querySelector(".name").textContent = id;
  const tile = tiles.get(id);
  if (tile && tile.url) large.querySelector("img").src = tile.url;
  sendWatch();
}

function closeLarge() {
  largeCamera = null;
  large.hidden = true;
  delete large.dataset.camera;
  sendWatch();
}

document.getElementById("close").addEventListener("click", (e) => {
  e.stopPropagation();
  closeLarge();
});
large.addEventListener("click", (e) => { if (e.target === large) closeLarge(); });
document.addEventListener("keydown", (e) => { if (e.key === "Escape") closeLarge(); });
document.addEventListener("visibilitychange", sendWatch);

function onHello(message) {
  cameras = message.cameras;
  for (const id of cameras) if (!tiles.has(id)) tiles.set(id, makeTile(id));
  document.body.dataset.cameras = String(cameras.length);
  sentWatch = "";
  sendWatch();
}

function onPicture(buffer) {
  const view = new DataView(buffer);
  const id = cameras[view.getUint16(0)];
  const tile = tiles.get(id);
  if (!tile) return;
  const url = URL.createObjectURL(new Blob([buffer.slice(2)], { type: "image/jpeg" }));
  const old = tile.url;
  tile.url = url;
  tile.img.src = url;
  tile.frames += 1;
  tile.el.dataset.frames = String(tile.frames);
  if (largeCamera === id) large.querySelector("img").src = url;
  if (old) setTimeout(() => URL.revokeObjectURL(old), 1000);
}

function cameraStats(c) {
  const counts = c.counts && "in" in c.counts ? ` · in <b>${c.counts.in}</b> out <b>${c.counts.out}</b>` : "";
  return `<b>${c.fps}</b> fps · p50 <b>${fmt(c.p50_ms)}</b> p99 <b>${fmt(c.p99_ms)}</b> ms · ` +
    `lag <b>${fmt(c.lag_ms)}</b> ms<br>answered <b class="answered">${c.answered}</b> · ` +
    `dropped <b class="dropped">${c.dropped}</b> · failed <b class="failed">${c.failed}</b> · ` +
    `reconnects <b>${c.reconnects}</b>${counts}`;
}

function onStats(message) {
  let up = 0;
  for (const c of message.cameras) {
    const tile = tiles.get(c.id);
    if (!tile) continue;
    if (c.up) up += 1;
    tile.el.classList.toggle("down", !c.up);
    tile.el.dataset.state = c.up ? "up" : "down";
    tile.el.dataset.answered = String(c.answered);
    const state = c.up ? `${c.fps} fps` : "DOWN";
    text(tile.el.querySelector(".state"), state);
    tile.el.querySelector(".state").title = c.error || "";
    const html = cameraStats(c);
    const stats = tile.el.querySelector(".stats");
    if (stats.innerHTML !== html) stats.innerHTML = html;
    if (largeCamera === c.id) {
      large.querySelector(".stats").innerHTML = html;
      text(large.querySelector(".state"), c.up ? "" : `DOWN ${c.error || ""}`);
    }
  }
  text(document.getElementById("summary"), `${up}/${message.cameras.length} cameras up`);
  document.getElementById("servers").innerHTML = message.servers
    .map((s) => `<span class="badge ${s.up ? "up" : "down"}">server ${esc(s.url)} ${s.up ? "ready" : "down"}</span>`)
    .join("") + message.triton
    .map((t) => `<span class="badge ${t.ok ? "up" : "down"}">metrics ${t.ok ? "ok" : "unreachable"}</span>`)
    .join("");
  const rows = [];
  for (const t of message.triton) {
    for (const m of t.models || []) {
      rows.push(`<tr><td>${esc(m.model)}</td><td>${fmt(m.rps)}</td><td>${fmt(m.queue_ms)}</td>` +
        `<td>${fmt(m.compute_ms)}</td><td>${m.pending}</td><td>${m.failed}</td></tr>`);
    }
  }
  document.querySelector("#models tbody").innerHTML = rows.join("");
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/ws`);
  socket.binaryType = "arraybuffer";
  socket.onmessage = (event) => {
    if (typeof event.data !== "string") return onPicture(event.data);
    const message = JSON.parse(event.data);
    if (message.type === "hello") onHello(message);
    else if (message.type === "stats") onStats(message);
  };
  socket.onclose = () => {
    text(document.getElementById("summary"), "disconnected, retrying…");
    sentWatch = "";
    setTimeout(connect, 1000);
  };
}

connect();
