// The dashboard's script: keeps a server-rendered page live. The page names the JSON view
// it was rendered from (<body data-source>); this polls it every couple of seconds and
// updates the page in place (render.js) and its charts (charts.js). Built into
// node/gateway/static/dist/dashboard.js by `make dashboard` (esbuild); see
// node/gateway/dashboard.py for the pages and their views.

import { drawCharts } from "./charts.js";
import { poll } from "./poll.js";
import { applyView } from "./render.js";

const body = document.body;
const live = document.getElementById("live");

function setLive(state, text) {
  if (!live) return;
  live.dataset.state = state;
  live.querySelector(".live-text").textContent = text;
}

function clock() {
  return new Date().toISOString().slice(11, 19);
}

function start() {
  const source = body.dataset.source;
  if (!source) {
    setLive("static", "static page");
    return;
  }
  let updates = 0;
  poll(source, Number(body.dataset.pollMs) || 2000, {
    onView(view) {
      applyView(document, view);
      drawCharts(document, view.charts);
      updates += 1;
      // Read by the browser tests: how many polls have been applied to the page.
      body.dataset.updates = String(updates);
      setLive("live", `live · ${clock()} UTC`);
    },
    onError(error) {
      setLive("error", "reconnecting…");
      console.warn("dashboard: poll failed:", error.message);
    },
    onPause() {
      setLive("paused", "paused");
    },
  });
}

start();
