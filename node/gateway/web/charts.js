// The dashboard's charts, drawn with Chart.js (bundled from npm at `make` time). A chart
// is a View's {kind, x_label, y_label, series: [{label, tone, points: [[x, y], ...]}]};
// line charts have a numeric x axis (steps), bar charts a category axis (minutes).

import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from "chart.js";

Chart.register(
  BarController,
  BarElement,
  CategoryScale,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
);
Chart.defaults.font.family =
  'system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif';
Chart.defaults.color = "#5d6673";

// The stylesheet's tones (static/dashboard.css).
const TONES = { ok: "#2da44e", info: "#3b82f6", warn: "#d4a72c", bad: "#e5534b", muted: "#8a93a0" };

const charts = new WeakMap();
const shown = new WeakMap();

function datasets(spec) {
  return spec.series.map((series) => {
    const colour = TONES[series.tone] || TONES.muted;
    const line = spec.kind === "line";
    return {
      label: series.label,
      data: line ? series.points.map(([x, y]) => ({ x, y })) : series.points.map(([, y]) => y),
      borderColor: colour,
      backgroundColor: line ? colour : `${colour}cc`,
      borderWidth: line ? 2 : 0,
      borderRadius: line ? 0 : 3,
      pointRadius: 0,
      pointHoverRadius: 3,
      tension: 0.15,
      spanGaps: false,
    };
  });
}

function chartData(spec) {
  const data = { datasets: datasets(spec) };
  if (spec.kind === "bar") data.labels = (spec.series[0]?.points || []).map(([x]) => x);
  return data;
}

function config(spec) {
  const line = spec.kind === "line";
  return {
    type: line ? "line" : "bar",
    data: chartData(spec),
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      interaction: { mode: line ? "nearest" : "index", intersect: false, axis: "x" },
      scales: {
        x: {
          type: line ? "linear" : "category",
          title: { display: true, text: spec.x_label },
          grid: { display: false },
          ticks: { maxTicksLimit: 12, precision: 0 },
        },
        y: {
          beginAtZero: !line,
          title: { display: true, text: spec.y_label },
          grid: { color: "#eef0f3" },
        },
      },
      plugins: {
        legend: {
          display: spec.series.length > 1,
          position: "top",
          align: "end",
          labels: {
            boxWidth: 12,
            // A series with nothing to show yet (no rejected segment) stays out of the legend.
            filter: (item, data) => data.datasets[item.datasetIndex].data.length > 0,
          },
        },
      },
    },
  };
}

export function drawCharts(root, specs) {
  for (const canvas of root.querySelectorAll("canvas[data-chart]")) {
    const spec = specs[canvas.dataset.chart];
    if (spec === undefined) continue;
    const signature = JSON.stringify(spec);
    if (shown.get(canvas) === signature) continue;
    shown.set(canvas, signature);
    const chart = charts.get(canvas);
    if (chart === undefined) {
      charts.set(canvas, new Chart(canvas, config(spec)));
    } else {
      chart.data = chartData(spec);
      chart.update("none");
    }
    // Read by the browser tests: how many points the chart holds.
    const points = spec.series.reduce((sum, series) => sum + series.points.length, 0);
    canvas.dataset.points = String(points);
  }
}
