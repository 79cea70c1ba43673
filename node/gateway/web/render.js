// Updating a page from its View (node/gateway/dashboard_views.py): facts, tables,
// meters and timelines. Builds the markup templates/dashboard/macros.html renders on the
// server, from the same JSON; keep the two in step. Text always goes in as text
// (textContent), never as HTML: names, reasons and descriptions come from untrusted
// participants.

// What each element last showed, so that an unchanged part of the page is left alone.
const shown = new WeakMap();

function changed(node, value) {
  const signature = JSON.stringify(value);
  if (shown.get(node) === signature) return false;
  shown.set(node, signature);
  return true;
}

export function renderCell(c) {
  // Links are the server's own paths; anything else is shown as plain text.
  const linked = typeof c.href === "string" && c.href.startsWith("/");
  const node = document.createElement(linked ? "a" : "span");
  if (linked) node.href = c.href;
  const classes = [];
  if (c.badge) classes.push("badge", `badge-${c.badge}`);
  if (c.mono) classes.push("mono");
  if (classes.length) node.className = classes.join(" ");
  if (c.title) node.title = c.title;
  node.textContent = c.text;
  return node;
}

// The rows each table showed at the last update (none before the first: the server's).
const rowKeys = new WeakMap();

function renderRows(tbody, rows) {
  const before = rowKeys.get(tbody);
  const keys = rows.map((cells) => JSON.stringify(cells));
  rowKeys.set(tbody, new Set(keys));
  if (rows.length === 0) {
    const row = document.createElement("tr");
    row.className = "empty";
    const cell = document.createElement("td");
    cell.colSpan = Number(tbody.dataset.columns) || 1;
    cell.textContent = tbody.dataset.empty || "";
    row.append(cell);
    tbody.replaceChildren(row);
    return;
  }
  tbody.replaceChildren(
    ...rows.map((cells, index) => {
      const row = document.createElement("tr");
      // A row that was not there at the last update is highlighted for a moment.
      if (before !== undefined && !before.has(keys[index])) row.classList.add("fresh");
      for (const c of cells) {
        const td = document.createElement("td");
        td.append(renderCell(c));
        row.append(td);
      }
      return row;
    }),
  );
}

function renderTimeline(list, blocks) {
  list.replaceChildren(
    ...blocks.map((block) => {
      const item = document.createElement("li");
      item.className = `block tone-${block.tone}`;
      item.title = block.title;
      item.textContent = block.label;
      return item;
    }),
  );
}

export function applyView(root, view) {
  document.title = `${view.title} · BlackTail`;
  for (const node of root.querySelectorAll("[data-fact]")) {
    const c = view.facts[node.dataset.fact];
    if (c !== undefined && changed(node, c)) node.replaceChildren(renderCell(c));
  }
  for (const tbody of root.querySelectorAll("tbody[data-table]")) {
    const rows = view.tables[tbody.dataset.table];
    if (rows !== undefined && changed(tbody, rows)) renderRows(tbody, rows);
  }
  for (const node of root.querySelectorAll("[data-meter]")) {
    const meter = view.meters[node.dataset.meter];
    if (meter === undefined || !changed(node, meter)) continue;
    const bar = node.querySelector("progress");
    bar.max = meter.max;
    bar.value = meter.value;
    node.querySelector(".meter-text").textContent = meter.text;
  }
  for (const list of root.querySelectorAll("[data-timeline]")) {
    const blocks = view.timelines[list.dataset.timeline];
    if (blocks !== undefined && changed(list, blocks)) renderTimeline(list, blocks);
  }
}
