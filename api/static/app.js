// Strata web page: upload, list, ask (streamed over SSE via fetch), show citations and usage.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { selected: null, docs: [] };

const keyInput = $("api-key");
keyInput.value = localStorage.getItem("strata-api-key") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("strata-api-key", keyInput.value);
  refresh();
});

function headers(extra = {}) {
  const key = keyInput.value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body.error) message = `${body.error.type}: ${body.error.message}`;
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function showError(err) { $("error").textContent = err ? String(err.message || err) : ""; }

// -- documents -----------------------------------------------------------------------------
async function refresh() {
  try {
    const body = await (await api("/v1/documents")).json();
    state.docs = body.data;
    renderDocuments();
    if (state.docs.some((d) => d.status === "processing")) setTimeout(refresh, 1000);
  } catch (err) { showError(err); }
}

function renderDocuments() {
  const list = $("documents");
  list.replaceChildren();
  for (const doc of state.docs) {
    const li = document.createElement("li");
    li.dataset.id = doc.id;
    li.className = doc.id === state.selected ? "selected" : "";
    const name = document.createElement("span");
    name.textContent = doc.name;
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.textContent = `${doc.status} · ${doc.tokens} tokens · ${doc.items} items`;
    const del = document.createElement("button");
    del.textContent = "✕";
    del.title = "delete";
    del.addEventListener("click", async (ev) => {
      ev.stopPropagation();
      try {
        await api(`/v1/documents/${doc.id}`, { method: "DELETE" });
        if (state.selected === doc.id) select(null);
        refresh();
      } catch (err) { showError(err); }
    });
    li.append(name, meta, del);
    li.addEventListener("click", () => select(doc));
    list.append(li);
  }
}

function select(doc) {
  state.selected = doc ? doc.id : null;
  $("selected").textContent = doc ? `Asking about: ${doc.name}` : "No document selected";
  $("ask-button").disabled = !doc;
  renderDocuments();
}

async function upload(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("files", f, f.name);
  $("upload-status").textContent = `Uploading ${files.length} file(s)…`;
  showError(null);
  try {
    const doc = await (await api("/v1/documents", { method: "POST", body: form })).json();
    $("upload-status").textContent = `${doc.name}: ${doc.status}, ${doc.tokens} tokens`;
    await refresh();
    select(state.docs.find((d) => d.id === doc.id) || doc);
  } catch (err) {
    $("upload-status").textContent = "Upload failed";
    showError(err);
  }
}

const drop = $("drop");
drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  upload([...ev.dataTransfer.files]);
});
$("file-input").addEventListener("change", (ev) => upload([...ev.target.files]));

// -- asking --------------------------------------------------------------------------------
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
      if (data && data !== "[DONE]") yield JSON.parse(data);
    }
  }
}

$("ask-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!state.selected) return;
  const answer = $("answer");
  answer.textContent = "";
  $("usage").textContent = "";
  $("citations").replaceChildren();
  $("snippet").replaceChildren();
  showError(null);
  $("ask-button").disabled = true;
  const body = { question: $("question").value, max_tokens: Number($("max-tokens").value), stream: true };
  try {
    const response = await api(`/v1/documents/${state.selected}/ask`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    for await (const event of sseEvents(response)) {
      if (event.type === "delta") answer.textContent += event.text;
      else if (event.type === "done") showResult(event);
      else if (event.type === "error") showError(new Error(`${event.error.type}: ${event.error.message}`));
    }
  } catch (err) { showError(err); }
  $("ask-button").disabled = !state.selected;
});

function showResult(result) {
  const u = result.usage;
  const hit = u.prompt_tokens ? ((100 * u.cached_tokens) / u.prompt_tokens).toFixed(1) : "0.0";
  $("usage").textContent = `${u.prompt_tokens} prompt tokens · ${u.cached_tokens} cached (${hit}% cache hit) · `
    + `${u.completion_tokens} generated · first token ${(result.timings.ttft_s * 1000).toFixed(0)} ms · `
    + `${result.timings.decode_tokens_per_s.toFixed(1)} tok/s`;
  $("usage").dataset.cachedTokens = u.cached_tokens;
  const list = $("citations");
  for (const c of result.citations) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.textContent = `${c.label} (${(c.score * 100).toFixed(1)}%)`;
    a.addEventListener("click", () => openCitation(c));
    li.append(a);
    list.append(li);
  }
}

async function openCitation(c) {
  const params = new URLSearchParams({ path: c.path });
  for (const k of ["line_start", "line_end", "page", "time_s"]) if (c[k] !== null && c[k] !== undefined) params.set(k, c[k]);
  const box = $("snippet");
  box.replaceChildren();
  try {
    const response = await api(`/v1/documents/${state.selected}/source?${params}`);
    const type = response.headers.get("content-type") || "";
    if (type.startsWith("application/json")) {
      const body = await response.json();
      const pre = document.createElement("pre");
      const lo = c.line_start ?? 0, hi = c.line_end ?? c.line_start ?? 0;
      body.lines.forEach((l, i) => {
        const n = body.first_line + i;
        const row = document.createElement("span");
        row.className = n >= lo && n <= hi ? "cited" : "";
        row.textContent = `${String(n).padStart(5)}  ${l}\n`;
        pre.append(row);
      });
      box.append(pre);
    } else {
      const img = document.createElement("img");
      img.src = URL.createObjectURL(await response.blob());
      img.alt = c.label;
      box.append(img);
    }
  } catch (err) { showError(err); }
}

refresh();
