// The status page: polls status.json (relative: works under an ingress prefix), draws the tables
// and the latency plot, and plays what the speak box asks the proxy to say. Text from the server
// goes in through textContent only.
"use strict";

const REFRESH_MS = 5000;
const HOUR_S = 3600;

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "—" : String(text);
  if (className) td.className = className;
  return td;
}

function seconds(value) {
  return value === null || value === undefined ? "—" : `${value.toFixed(2)} s`;
}

function clock(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleTimeString();
}

function duration(total) {
  const s = Math.floor(total);
  const parts = [[Math.floor(s / 86400), "d"], [Math.floor(s / 3600) % 24, "h"], [Math.floor(s / 60) % 60, "min"]];
  const shown = parts.filter(([n]) => n > 0).map(([n, unit]) => `${n} ${unit}`);
  return shown.length ? shown.join(" ") : `${s} s`;
}

function fillUpstreams(upstreams) {
  const body = document.querySelector("#upstreams tbody");
  body.replaceChildren();
  for (const upstream of upstreams) {
    const row = body.insertRow();
    row.dataset.direction = upstream.direction;
    row.dataset.upstream = upstream.upstream;
    cell(row, upstream.direction.toUpperCase());
    cell(row, upstream.upstream);
    cell(row, upstream.url);
    cell(row, upstream.backend);
    let state = upstream.state;
    if (upstream.until) state += ` until ${new Date(upstream.until).toLocaleTimeString()}`;
    if (upstream.failures_in_a_row) state += ` (${upstream.failures_in_a_row} failed in a row)`;
    cell(row, state, `state ${upstream.state}`);
    cell(row, upstream.last_failure, "wrap muted");
  }
}

function fillLatency(latency) {
  const body = document.querySelector("#latency tbody");
  body.replaceChildren();
  const names = { stt: "Speech-to-text (end of speech → transcript)", tts: "Text-to-speech (request → first audio)" };
  for (const direction of ["stt", "tts"]) {
    const numbers = latency[direction];
    const row = body.insertRow();
    cell(row, names[direction]);
    cell(row, numbers.count);
    cell(row, seconds(numbers.p50));
    cell(row, seconds(numbers.p90));
    cell(row, seconds(numbers.p99));
  }
}

function svg(name, attributes) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  return element;
}

function drawPlot(plot, now) {
  const box = document.getElementById("plot");
  // Drawn in the element's own pixels, so the hour spans the whole width and dots stay round.
  const width = Math.max(300, Math.round(box.getBoundingClientRect().width)), height = 160;
  const left = 34, bottom = 18, top = 6;
  box.setAttribute("viewBox", `0 0 ${width} ${height}`);
  const all = [...plot.stt, ...plot.tts].map(([, s]) => s);
  const ceiling = Math.max(0.5, ...all) * 1.1;
  const x = (t) => left + ((t - (now - HOUR_S)) / HOUR_S) * (width - left - 4);
  const y = (s) => height - bottom - (s / ceiling) * (height - bottom - top);
  box.replaceChildren();
  box.append(svg("line", { class: "axis", x1: left, y1: height - bottom, x2: width, y2: height - bottom }));
  box.append(svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: height - bottom }));
  for (const fraction of [0, 0.5, 1]) {
    const label = svg("text", { x: 2, y: y(ceiling * fraction) + 3 });
    label.textContent = `${(ceiling * fraction).toFixed(1)}s`;
    box.append(label);
  }
  for (const [text, t] of [["-60 min", now - HOUR_S], ["-30 min", now - HOUR_S / 2], ["now", now]]) {
    const label = svg("text", { x: Math.min(x(t), width - 34), y: height - 4 });
    label.textContent = text;
    box.append(label);
  }
  for (const direction of ["stt", "tts"]) {
    for (const [t, s] of plot[direction]) {
      box.append(svg("circle", { class: direction, cx: x(t).toFixed(1), cy: y(s).toFixed(1), r: 2.5 }));
    }
  }
}

function fillRecent(recent) {
  const body = document.querySelector("#recent tbody");
  body.replaceChildren();
  for (const request of recent) {
    const row = body.insertRow();
    cell(row, clock(request.time));
    cell(row, request.direction.toUpperCase());
    cell(row, request.voice ? `${request.model} / ${request.voice}` : request.model);
    const via = request.fell_back_after ? `${request.upstream} (primary: ${request.fell_back_after})` : request.upstream;
    cell(row, via);
    cell(row, seconds(request.latency));
    cell(row, seconds(request.total));
    cell(row, request.direction === "stt" ? `${request.amount.toFixed(1)} s audio` : `${request.amount} chars`);
    cell(row, request.outcome, `outcome ${request.outcome === "ok" ? "ok" : "bad"}`);
  }
}

function fillVoices(voices, chosen) {
  const select = document.getElementById("speak-voice");
  if (select.options.length === voices.length) return; // keep the user's choice
  select.replaceChildren();
  for (const voice of voices) {
    const option = new Option(voice.description || voice.name, voice.name);
    option.selected = voice.name === chosen;
    select.append(option);
  }
  document.getElementById("speak-section").hidden = voices.length === 0;
}

async function refresh() {
  try {
    const response = await fetch("status.json", { cache: "no-store" });
    const status = await response.json();
    const down = status.upstreams.filter((u) => u.state !== "ok").length;
    document.getElementById("summary").textContent =
      `Version ${status.version} · up ${duration(status.uptime)} · ${status.clients} client(s) connected · ` +
      (down ? `${down} upstream(s) not ok` : "all upstreams ok");
    fillUpstreams(status.upstreams);
    fillLatency(status.latency);
    drawPlot(status.plot, status.now);
    fillRecent(status.recent);
    fillVoices(status.voices, status.default_voice);
    document.body.dataset.loaded = "true";
  } catch (error) {
    document.getElementById("summary").textContent = `Cannot reach the proxy: ${error}`;
  }
}

async function speak(event) {
  event.preventDefault();
  const status = document.getElementById("speak-status");
  const audio = document.getElementById("speak-audio");
  const text = document.getElementById("speak-text").value;
  const voice = document.getElementById("speak-voice").value;
  status.textContent = "Synthesizing…";
  try {
    const response = await fetch("speak", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ text, voice }),
    });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({ error: response.statusText }));
      throw new Error(problem.error);
    }
    const wav = await response.blob();
    if (audio.src) URL.revokeObjectURL(audio.src);
    audio.src = URL.createObjectURL(wav);
    audio.addEventListener("loadedmetadata", () => {
      status.textContent = `Playing ${audio.duration.toFixed(2)} s (${voice})`;
    }, { once: true });
    await audio.play().catch(() => { /* no sound device, or autoplay refused: the controls remain */ });
  } catch (error) {
    status.textContent = `Failed: ${error.message}`;
  }
  refresh();
}

document.getElementById("speak").addEventListener("submit", speak);
refresh();
setInterval(refresh, REFRESH_MS);
