// The audit trail: filter by time, operation, subject, gallery; a page at a time, newest page first.
import { call } from "../api.js";
import { attempt, el, pager, table, when } from "../ui.js";

const PAGE = 50;
const OPERATIONS = [
  "enrol", "delete", "read_subject", "list_subjects", "identify", "verify", "analyze", "gallery_create",
  "gallery_list", "gallery_show", "gallery_update", "gallery_delete", "gallery_read", "compaction_read",
  "demo_load", "import", "import_list", "import_read", "key_read", "stages_read", "audit_read",
];

function seconds(input) {
  return input.value ? new Date(input.value).getTime() / 1000 : undefined;
}

export async function auditScreen() {
  const since = el("input#audit-since", { type: "datetime-local", step: 1 });
  const until = el("input#audit-until", { type: "datetime-local", step: 1 });
  const operation = el("select#audit-operation", {}, el("option", { value: "" }, "any"), OPERATIONS.map((o) => el("option", { value: o }, o)));
  const subject = el("input#audit-subject", { placeholder: "subject id", spellcheck: "false" });
  const gallery = el("input#audit-gallery", { placeholder: "gallery id", spellcheck: "false" });
  const apply = el("button#audit-apply", { type: "submit" }, "Show");
  const listing = el("div.listing#audit-records");

  const filters = () => ({
    since: seconds(since), until: seconds(until), operation: operation.value, subject_id: subject.value.trim(),
    gallery_id: gallery.value.trim(),
  });
  const show = (offset) => attempt(async () => {
    const page = await call("audit", { query: { ...filters(), offset, limit: PAGE } });
    listing.replaceChildren(records(page.records), pager(offset, PAGE, page.total, show));
  }, apply);
  // The newest page first: the trail is read oldest first, so the last page is found from the total.
  const newest = () => attempt(async () => {
    const { total } = await call("audit", { query: { ...filters(), offset: 0, limit: 1 } });
    await show(Math.max(0, Math.floor((total - 1) / PAGE) * PAGE));
  }, apply);

  await newest();
  return el("section", {},
    el("h1", {}, "Audit trail"),
    el("form.inline#audit-filters", { on: { submit: (event) => { event.preventDefault(); newest(); } } },
      el("label", {}, "From ", since), el("label", {}, "To ", until), el("label", {}, "Operation ", operation),
      el("label", {}, "Subject ", subject), el("label", {}, "Gallery ", gallery), apply),
    el("p.note", {}, "Subject ids are kept in the trail as pseudonyms; filter by the real id to find a subject's records. " +
      "Reading the trail is itself recorded."),
    listing);
}

function records(list) {
  return table(
    [
      ["time", (r) => when(r.time)],
      ["operation", (r) => r.operation],
      ["phase", (r) => r.phase],
      ["outcome", (r) => el(`span.status.${r.outcome.startsWith("2") ? "pass" : r.outcome === "pending" ? "plain" : "fail"}`, {}, r.outcome)],
      ["key", (r) => r.key_id],
      ["galleries", (r) => r.galleries.join(", ")],
      ["subjects", (r) => r.subject_ids.map((s) => el("span.pseudonym", { title: s }, s.length > 16 ? `${s.slice(0, 12)}…` : s))],
      ["decisions", (r) => r.decisions.map((d) => el("div", {}, decision(d)))],
      ["detail", (r) => r.detail ?? ""],
      ["count", (r) => r.count],
      ["client", (r) => r.client ?? ""],
    ],
    list,
    { rowAttributes: (r) => ({ title: `request ${r.request_id}`, dataset: { operation: r.operation } }), empty: "No records match." },
  );
}

// One decision as "name value" pairs, fractions to 3 digits, empty fields left out.
function decision(fields) {
  return Object.entries(fields)
    .filter(([, value]) => value !== null && value !== undefined)
    .map(([name, value]) => `${name} ${typeof value === "number" && !Number.isInteger(value) ? value.toFixed(3) : typeof value === "object" ? JSON.stringify(value) : value}`)
    .join(" · ");
}
