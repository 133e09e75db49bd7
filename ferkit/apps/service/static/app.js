// ferkit web page: photo upload and live camera over the JSON API. Plain JS, no build step.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const EMOTIONS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"];
  // Same colours as ferkit/drawing.py (converted from BGR).
  const COLORS = {
    angry: "rgb(220,40,40)", disgust: "rgb(60,140,40)", fear: "rgb(150,60,160)", happy: "rgb(255,200,0)",
    neutral: "rgb(200,200,200)", sad: "rgb(30,110,200)", surprise: "rgb(255,140,0)",
  };
  const UNREADABLE = "rgb(128,128,128)";
  const REASONS = { too_small: "too small", blurry: "blurry", turned_away: "turned away", low_score: "unsure" };
  const SENDABLE = ["image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif"];
  const KEY_STORE = "ferkit-api-key";

  let limits = { max_upload_bytes: 20 * 1024 * 1024, max_pixels: 50e6 };
  let retryAfterKey = null; // what to re-run once an API key is entered
  let objectUrl = null;
  let lastFile = null; // re-analysed when the "bars" option changes

  // ------------------------------------------------------------------ helpers
  function apiHeaders(extra) {
    const h = Object.assign({}, extra || {});
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) h["X-API-Key"] = key;
    return h;
  }

  async function errorText(resp) {
    try {
      const body = await resp.json();
      if (body && body.detail) return `${body.detail} (${resp.status})`;
    } catch (_) { /* not JSON */ }
    return `HTTP ${resp.status}`;
  }

  function showError(msg) {
    const el = $("error");
    el.textContent = msg || "";
    el.hidden = !msg;
  }

  function needKey(retry) {
    retryAfterKey = retry;
    $("key-box").hidden = false;
    $("api-key").focus();
  }

  function setStatus(msg) { $("status").textContent = msg; }

  function faceLabel(face) {
    if (!face.readable) return `unreadable: ${REASONS[face.reason] || face.reason}`;
    return `${face.emotion} ${Math.round(face.confidence * 100)}%`;
  }

  function el(tag, props, children) {
    const node = document.createElement(tag);
    Object.assign(node, props || {});
    for (const c of children || []) node.append(c);
    return node;
  }

  // ------------------------------------------------------------------ model info
  async function loadInfo() {
    try {
      const resp = await fetch("/v1/models", { headers: apiHeaders() });
      if (resp.status === 401) { needKey(loadInfo); return; }
      if (!resp.ok) return;
      const info = await resp.json();
      limits = info.limits || limits;
      const model = (info.models || []).find((m) => m.name === info.loaded.model);
      const acc = model && model.val_accuracy ? ` (${(model.val_accuracy * 100).toFixed(1)}% validation accuracy)` : "";
      $("model-info").textContent = `model ${info.loaded.model}${acc} · detector ${info.loaded.detector}`;
      $("formats").textContent = `JPEG, PNG, WebP, BMP or GIF · up to ${(limits.max_upload_bytes / 1048576).toFixed(0)} MB`;
    } catch (_) { /* the page still works without it */ }
  }

  // ------------------------------------------------------------------ photo mode
  async function toSendable(file) {
    // Send the original when the server accepts it as is; otherwise re-encode (HEIC, TIFF, too big, too many pixels).
    const okType = SENDABLE.includes(file.type);
    if (okType && file.size <= limits.max_upload_bytes) return { blob: file, type: file.type };
    let bitmap;
    try {
      bitmap = await createImageBitmap(file);
    } catch (_) {
      throw new Error(`${file.name || "this file"} is not an image this browser can read`);
    }
    const maxSide = 3000;
    const zoom = Math.min(1, maxSide / Math.max(bitmap.width, bitmap.height));
    const canvas = el("canvas", { width: Math.round(bitmap.width * zoom), height: Math.round(bitmap.height * zoom) });
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise((res) => canvas.toBlob(res, "image/jpeg", 0.9));
    return { blob, type: "image/jpeg" };
  }

  function probabilityCell(face) {
    if (!face.probabilities) {
      return el("div", { className: "unreadable", textContent: "—" });
    }
    const grid = el("div", { className: "probs" });
    for (const emo of EMOTIONS) {
      const p = face.probabilities[emo] || 0;
      const fill = el("span");
      fill.style.width = `${(p * 100).toFixed(1)}%`;
      fill.style.background = COLORS[emo];
      grid.append(el("span", { textContent: emo }), el("div", { className: "bar" }, [fill]),
        el("span", { className: "pct", textContent: `${Math.round(p * 100)}%` }));
    }
    return grid;
  }

  function thumbnail(bitmap, face) {
    const c = el("canvas", { className: "thumb", width: 112, height: 112 });
    if (bitmap) {
      const [x, y, w, h] = face.box;
      const side = Math.max(w, h) * 1.15;
      const cx = x + w / 2, cy = y + h / 2;
      c.getContext("2d").drawImage(bitmap, cx - side / 2, cy - side / 2, side, side, 0, 0, c.width, c.height);
    }
    c.setAttribute("role", "img");
    c.setAttribute("aria-label", `face ${face.box.map(Math.round).join(", ")}`);
    return c;
  }

  function renderTable(result, bitmap) {
    const table = $("faces");
    const tbody = table.querySelector("tbody");
    tbody.replaceChildren();
    result.faces.forEach((face, i) => {
      const color = face.readable ? COLORS[face.emotion] : UNREADABLE;
      const swatch = el("span", { className: "swatch" });
      swatch.style.background = color;
      let emotionCell;
      if (face.readable) {
        emotionCell = el("td", {}, [swatch, el("span", { className: "emotion", textContent: face.emotion }),
          el("div", { className: "muted", textContent: `${Math.round(face.confidence * 100)}% · readable` })]);
      } else {
        const q = face.quality || {};
        emotionCell = el("td", { className: "unreadable" }, [swatch,
          el("span", { textContent: `unreadable: ${REASONS[face.reason] || face.reason}` }),
          el("div", { className: "muted", textContent: `${Math.round(q.face_size || 0)} px face, sharpness ${Math.round(q.sharpness || 0)}` })]);
      }
      const row = el("tr", {}, [el("td", { textContent: String(i + 1) }), el("td", {}, [thumbnail(bitmap, face)]),
        emotionCell, el("td", {}, [probabilityCell(face)])]);
      row.dataset.readable = String(face.readable);
      tbody.append(row);
    });
    table.hidden = result.faces.length === 0;
    const readable = result.faces.filter((f) => f.readable).length;
    const n = result.faces.length;
    $("summary").textContent = n === 0 ? "No faces found."
      : `${n} face${n === 1 ? "" : "s"}, ${readable} readable · ${result.width}×${result.height} · ` +
        `${Math.round(result.timings_ms.total)} ms on the server`;
  }

  async function analyzePhoto(file) {
    if (!file) return;
    lastFile = file;
    showError("");
    document.body.dataset.state = "busy";
    setStatus(`Analysing ${file.name || "photo"}…`);
    $("result").hidden = false;
    $("annotated").removeAttribute("src");
    $("faces").hidden = true;
    $("summary").textContent = "";
    try {
      const { blob, type } = await toSendable(file);
      const bars = $("bars").checked ? "&bars=true" : "";
      const opts = { method: "POST", body: blob, headers: apiHeaders({ "Content-Type": type }) };
      // Analysis and annotated image in parallel (two workers on the server).
      const [ra, ri] = await Promise.all([fetch("/v1/analyze", opts), fetch(`/v1/annotate?format=jpeg${bars}`, opts)]);
      if (ra.status === 401 || ri.status === 401) { needKey(() => analyzePhoto(file)); throw new Error("an API key is needed"); }
      if (!ra.ok) throw new Error(await errorText(ra));
      if (!ri.ok) throw new Error(await errorText(ri));
      const result = await ra.json();
      let bitmap = null;
      try { bitmap = await createImageBitmap(blob); } catch (_) { /* thumbnails stay blank */ }
      renderTable(result, bitmap);
      if (objectUrl) URL.revokeObjectURL(objectUrl);
      objectUrl = URL.createObjectURL(await ri.blob());
      const img = $("annotated");
      await new Promise((res) => { img.onload = res; img.onerror = res; img.src = objectUrl; });
      setStatus("");
      document.body.dataset.state = "done";
    } catch (e) {
      showError(e.message || String(e));
      setStatus("");
      $("result").hidden = true;
      document.body.dataset.state = "error";
    }
  }

  function setupPhoto() {
    const drop = $("drop");
    $("file").addEventListener("change", (ev) => analyzePhoto(ev.target.files[0]));
    $("bars").addEventListener("change", () => { if (lastFile) analyzePhoto(lastFile); });
    for (const type of ["dragenter", "dragover"]) {
      drop.addEventListener(type, (ev) => { ev.preventDefault(); drop.classList.add("over"); });
    }
    for (const type of ["dragleave", "drop"]) {
      drop.addEventListener(type, (ev) => { ev.preventDefault(); drop.classList.remove("over"); });
    }
    drop.addEventListener("drop", (ev) => {
      const file = ev.dataTransfer && ev.dataTransfer.files[0];
      if (file) analyzePhoto(file);
    });
    // Dropping a file anywhere else must not navigate away from the page.
    window.addEventListener("dragover", (ev) => ev.preventDefault());
    window.addEventListener("drop", (ev) => ev.preventDefault());
  }

  // ------------------------------------------------------------------ camera mode
  const cam = { stream: null, running: false, inFlight: false, facing: "user", done: [], last: null, frame: null,
    count: 0, id: null };

  // Each camera start is a new live stream: the server keeps one face tracker per stream id, so faces keep
  // their ids and the detector runs on a schedule, as in `ferkit camera`.
  function newStreamId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function camStatus(msg) { $("camera-status").textContent = msg; }

  async function startCamera() {
    showError("");
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showError("The camera is only available on https:// pages or on localhost; this page is " +
        `${location.origin}. Start the server with --ssl-certfile/--ssl-keyfile or open it on this computer.`);
      return;
    }
    stopCamera();
    try {
      cam.stream = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: cam.facing, width: { ideal: 1280 }, height: { ideal: 720 } }, audio: false,
      });
    } catch (e) {
      showError(`Cannot open the camera: ${e.message || e.name}`);
      return;
    }
    const video = $("video");
    video.srcObject = cam.stream;
    await video.play().catch(() => {});
    $("stage").classList.toggle("mirror", cam.facing === "user");
    cam.running = true;
    cam.id = newStreamId();
    cam.done = [];
    cam.last = null;
    camStatus("");
    pump();
  }

  function stopCamera() {
    cam.running = false;
    if (cam.stream) for (const t of cam.stream.getTracks()) t.stop();
    cam.stream = null;
    $("video").srcObject = null;
    const ov = $("overlay");
    ov.getContext("2d").clearRect(0, 0, ov.width, ov.height);
  }

  function grabFrame() {
    const video = $("video");
    if (!video.videoWidth) return null;
    const maxSide = Number($("frame-size").value) || 480;
    const zoom = Math.min(1, maxSide / Math.max(video.videoWidth, video.videoHeight));
    const w = Math.round(video.videoWidth * zoom), h = Math.round(video.videoHeight * zoom);
    if (!cam.frame) cam.frame = el("canvas");
    cam.frame.width = w;
    cam.frame.height = h;
    cam.frame.getContext("2d").drawImage(video, 0, 0, w, h);
    return new Promise((res) => cam.frame.toBlob((b) => res(b && { blob: b, w, h }), "image/jpeg", 0.75));
  }

  async function pump() {
    // One frame in flight at a time: the next is grabbed only when the previous answer arrived.
    if (!cam.running || cam.inFlight || document.hidden) return;
    cam.inFlight = true;
    let delay = 0;
    try {
      const frame = await grabFrame();
      if (!frame) { delay = 100; return; }
      const resp = await fetch(`/v1/stream/${cam.id}`, {
        method: "POST", body: frame.blob, headers: apiHeaders({ "Content-Type": "image/jpeg" }),
      });
      if (resp.status === 401) { stopCamera(); needKey(startCamera); return; }
      if (resp.status === 503) {
        delay = 1000 * (Number(resp.headers.get("Retry-After")) || 1);
        camStatus("server busy, waiting…");
        return;
      }
      if (!resp.ok) { camStatus(await errorText(resp)); delay = 1000; return; }
      const result = await resp.json();
      cam.last = { result, w: frame.w, h: frame.h };
      const now = performance.now();
      cam.done.push(now);
      cam.count += 1;
      while (cam.done.length > 1 && now - cam.done[0] > 3000) cam.done.shift();
      const n = result.faces.length;
      camStatus(`${n} face${n === 1 ? "" : "s"} · ${Math.round(result.timings_ms.total)} ms server time per frame`);
      drawOverlay();
    } catch (e) {
      camStatus(`network error: ${e.message || e}`);
      delay = 1000;
    } finally {
      cam.inFlight = false;
      updateFps();
      if (cam.running) setTimeout(pump, delay);
    }
  }

  function updateFps() {
    const d = cam.done;
    const fps = d.length > 1 ? (d.length - 1) / ((d[d.length - 1] - d[0]) / 1000) : 0;
    const out = $("fps");
    out.textContent = `${fps.toFixed(1)} frames/s`;
    out.dataset.frames = String(cam.count);
  }

  function drawOverlay() {
    const ov = $("overlay");
    const rect = ov.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    ov.width = Math.max(1, Math.round(rect.width * dpr));
    ov.height = Math.max(1, Math.round(rect.height * dpr));
    const ctx = ov.getContext("2d");
    ctx.clearRect(0, 0, ov.width, ov.height);
    if (!cam.last || !cam.running) return;
    const { result, w } = cam.last;
    const s = ov.width / w;
    const mirror = cam.facing === "user";
    const font = Math.max(12, Math.round(14 * dpr));
    ctx.font = `600 ${font}px system-ui, sans-serif`;
    ctx.lineWidth = Math.max(2, 2 * dpr);
    for (const face of result.faces) {
      let [x, y, bw, bh] = face.box.map((v) => v * s);
      if (mirror) x = ov.width - x - bw;
      const color = face.readable ? COLORS[face.emotion] : UNREADABLE;
      ctx.strokeStyle = color;
      ctx.setLineDash(face.readable ? [] : [6 * dpr, 6 * dpr]);
      ctx.strokeRect(x, y, bw, bh);
      ctx.setLineDash([]);
      const label = (face.track_id ? `#${face.track_id} ` : "") + faceLabel(face);
      const tw = ctx.measureText(label).width + 8 * dpr;
      const th = font + 6 * dpr;
      const ty = y - th >= 0 ? y - th : Math.min(y + bh, ov.height - th);
      const tx = Math.max(0, Math.min(x, ov.width - tw));
      ctx.fillStyle = color;
      ctx.fillRect(tx, ty, tw, th);
      ctx.fillStyle = face.readable && ["happy", "neutral", "surprise"].includes(face.emotion) ? "#000" : "#fff";
      ctx.fillText(label, tx + 4 * dpr, ty + font);
    }
  }

  function setupCamera() {
    $("camera-stop").addEventListener("click", () => { stopCamera(); camStatus("camera stopped"); });
    $("camera-flip").addEventListener("click", () => {
      cam.facing = cam.facing === "user" ? "environment" : "user";
      startCamera();
    });
    document.addEventListener("visibilitychange", () => { if (!document.hidden) pump(); });
    window.addEventListener("resize", drawOverlay);
  }

  // ------------------------------------------------------------------ modes and key
  function setMode(mode) {
    const camera = mode === "camera";
    $("mode-photo").setAttribute("aria-pressed", String(!camera));
    $("mode-camera").setAttribute("aria-pressed", String(camera));
    $("photo-panel").hidden = camera;
    $("camera-panel").hidden = !camera;
    showError("");
    if (camera) startCamera(); else stopCamera();
  }

  function setup() {
    $("mode-photo").addEventListener("click", () => setMode("photo"));
    $("mode-camera").addEventListener("click", () => setMode("camera"));
    const saveKey = () => {
      sessionStorage.setItem(KEY_STORE, $("api-key").value.trim());
      $("key-box").hidden = true;
      const retry = retryAfterKey;
      retryAfterKey = null;
      loadInfo();
      if (retry && retry !== loadInfo) retry();
    };
    $("api-key-save").addEventListener("click", saveKey);
    $("api-key").addEventListener("keydown", (ev) => { if (ev.key === "Enter") saveKey(); });
    setupPhoto();
    setupCamera();
    loadInfo();
    document.body.dataset.state = "ready";
  }

  setup();
})();
