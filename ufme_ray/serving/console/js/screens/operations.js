// Operations: shard readiness, templates per shard, snapshot epochs, the execution providers of each
// stage's model sessions, the last compaction, imports.
import { call } from "../api.js";
import { attempt, el, facts, may, pager, table, when } from "../ui.js";

const IMPORT_PAGE = 20;

export async function operationsScreen(me) {
  const root = el("section", {}, el("h1", {}, "Operations"));
  const body = el("div");
  const refresh = el("button#operations-refresh", { type: "button", on: { click: () => attempt(fill, refresh) } }, "Refresh");
  root.append(refresh, body);

  async function fill() {
    const parts = [];
    if (may(me, "admin")) {
      const [gallery, stages, compaction] = await Promise.all([call("gallery"), call("stages"), call("compaction")]);
      parts.push(shards(gallery), stageSessions(stages.stages), lastCompaction(compaction.last));
    }
    const imports = el("div#imports");
    parts.push(imports);
    body.replaceChildren(...parts);
    const show = (offset) => attempt(async () => imports.replaceChildren(await importTable(offset, show)));
    await show(0);
  }

  await fill();
  return root;
}

function shards(gallery) {
  return el("div.panel#shards", {},
    el("h2", {}, "Shards"),
    facts([
      ["ready", gallery.ready ? "yes" : "no"],
      ["shards", gallery.num_shards],
      ["templates", gallery.total_templates],
      ["snapshot epochs", gallery.snapshot_epochs.join(", ") || "none yet"],
    ]),
    table(
      [
        ["shard", (s) => s.shard],
        ["ready", (s) => el(`span.status.${s.ready ? "pass" : "fail"}`, {}, s.ready ? "ready" : "not ready")],
        ["templates", (s) => s.live_templates ?? "—"],
        ["snapshot epoch", (s) => s.snapshot_epoch ?? "—"],
        ["index", (s) => s.index_kind ?? "—"],
        ["delta rows", (s) => s.delta_rows ?? "—"],
        ["applied seq", (s) => s.applied_seq ?? "—"],
        // writer / follower / handed_over: which deployment writes the shard's log (docs/OPERATIONS.md).
        ["log role", (s) => (s.role ?? "—").replace("_", " ")],
        ["error", (s) => s.error ?? ""],
      ],
      gallery.shards,
    ));
}

// One row per model session: a GPU node that fell back to CPU shows CPUExecutionProvider alone.
function stageSessions(stages) {
  const rows = stages.flatMap((s) => Object.entries(s.models).map(([model, providers]) => ({ stage: s.stage, model, providers })));
  return el("div.panel#stages", {},
    el("h2", {}, "Stages"),
    table(
      [
        ["stage", (r) => r.stage],
        ["model", (r) => r.model],
        ["execution providers", (r) => r.providers.join(", ")],
      ],
      rows,
    ));
}

function lastCompaction(last) {
  const panel = el("div.panel#compaction", {}, el("h2", {}, "Last compaction"));
  if (!last) {
    panel.append(el("p.empty", {}, "No compaction has run on this storage yet (ufme-ray compact)."));
    return panel;
  }
  panel.append(facts([
    ["status", el(`span.status.${last.status === "compacted" ? "pass" : "fail"}`, {}, last.status)],
    ["finished", when(last.finished_at)],
    ["duration", `${last.duration_s} s`],
    ["epoch", `${last.previous_epoch ?? "none"} → ${last.epoch ?? "none"}`],
    ["vectors", `${last.vectors_in} in, ${last.vectors_out} out, ${last.vectors_dropped} dropped`],
    ["shards swapped", last.swapped.join(", ") || "none"],
    ["shards not running", last.not_running.join(", ") || "none"],
    ["retention", last.retention ? `epochs deleted ${last.retention.epochs_deleted.join(", ") || "none"}, ` +
      `${last.retention.objects_deleted} objects, ${last.retention.segments_deleted} log segments` : "—"],
    ["error", last.error],
  ]));
  return panel;
}

async function importTable(offset, show) {
  const page = await call("imports", { query: { offset, limit: IMPORT_PAGE } });
  return el("div.panel", {},
    el("h2", {}, "Imports"),
    table(
      [
        ["import", (i) => i.import_id],
        ["gallery", (i) => i.gallery_id],
        ["source", (i) => i.source],
        ["capture", (i) => i.capture],
        ["state", (i) => el(`span.status.${i.state === "failed" ? "fail" : "pass"}`, {}, i.state)],
        ["photos", (i) => `${i.done} of ${i.total}`],
        ["outcomes", (i) => Object.entries(i.counts).map(([outcome, count]) => `${outcome} ${count}`).join(", ") || "—"],
        ["started", (i) => when(i.started_at)],
        ["finished", (i) => when(i.finished_at)],
        ["error", (i) => i.error ?? ""],
      ],
      page.imports,
      { empty: "No imports (ufme-ray import)." },
    ),
    pager(offset, IMPORT_PAGE, page.total, show));
}
