// Polling a JSON view: one request at a time, each bounded by a timeout; on failure the
// interval doubles up to a ceiling and returns to normal on the next success; a hidden
// tab stops polling until it is shown again.

const timeoutMs = 10_000;
const backoffMaxMs = 30_000;

export function poll(url, intervalMs, { onView, onError, onPause }) {
  let delay = intervalMs;
  let timer = null;
  let running = false;

  function schedule(ms) {
    if (timer === null && !running) timer = setTimeout(tick, ms);
  }

  async function tick() {
    timer = null;
    if (document.hidden) {
      onPause();
      return;
    }
    running = true;
    const controller = new AbortController();
    const abort = setTimeout(() => controller.abort(), timeoutMs);
    try {
      const response = await fetch(url, {
        headers: { Accept: "application/json" },
        cache: "no-store",
        signal: controller.signal,
      });
      if (!response.ok) throw new Error(`${url} answered ${response.status}`);
      onView(await response.json());
      delay = intervalMs;
    } catch (error) {
      onError(error);
      delay = Math.min(delay * 2, backoffMaxMs);
    } finally {
      clearTimeout(abort);
      running = false;
    }
    schedule(delay);
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) schedule(0);
  });
  schedule(0);
}
