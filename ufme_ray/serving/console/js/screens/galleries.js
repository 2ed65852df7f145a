// Galleries: the list with counts, create, delete; a gallery's subjects, a subject's templates, erase.
import { call, seg } from "../api.js";
import { attempt, confirmErase, el, facts, flashAfterRoute, may, number, pager, showBanner, table, when } from "../ui.js";

const PAGE = 20;
const SUBJECT_PAGE = 50;

export async function galleriesScreen(me, [galleryId, subjectId]) {
  if (galleryId) return subjectsView(me, galleryId, subjectId);
  const root = el("section", {}, el("h1", {}, "Galleries"));
  if (!may(me, "admin")) {
    root.append(ownGalleries(me));
    return root;
  }
  const listing = el("div.listing");
  const show = (offset) => attempt(async () => listing.replaceChildren(await galleryTable(offset, show)));
  root.append(createForm(() => show(0)), listing);
  await show(0);
  return root;
}

// Keys that may not list galleries (enrol role): the galleries the key names, or one typed in.
function ownGalleries(me) {
  if (me.galleries !== "*") {
    return table([["gallery", (g) => el("a", { href: `#/galleries/${seg(g)}` }, g)]], me.galleries);
  }
  const input = el("input#open-gallery", { value: "default", required: true, spellcheck: "false" });
  return el("form.inline", { on: { submit: (event) => { event.preventDefault(); location.hash = `#/galleries/${seg(input.value.trim())}`; } } },
    el("label", {}, "Gallery ", input), el("button", { type: "submit" }, "Show subjects"));
}

function createForm(done) {
  const id = el("input#gallery-new-id", { required: true, placeholder: "e.g. staff", spellcheck: "false" });
  const description = el("input#gallery-new-description", { placeholder: "optional" });
  const button = el("button#gallery-create", { type: "submit" }, "Create gallery");
  return el("form.inline", {
    on: {
      submit: (event) => {
        event.preventDefault();
        attempt(async () => {
          const created = await call("galleries", { method: "POST", json: { gallery_id: id.value.trim(), description: description.value } });
          id.value = description.value = "";
          // After the list is redrawn (which clears the banner), unless that failed and said why.
          if (await done()) showBanner(`Created gallery ${created.gallery_id}.`, "ok");
        }, button);
      },
    },
  }, el("label", {}, "New gallery ", id), el("label", {}, "Description ", description), button);
}

async function galleryTable(offset, show) {
  const page = await call("galleries", { query: { offset, limit: PAGE } });
  // The list names the galleries; each one's counts come from its own record.
  const infos = await Promise.all(page.galleries.map((g) => call(`galleries/${seg(g.gallery_id)}`)));
  const rows = table(
    [
      ["gallery", (g) => el("a", { href: `#/galleries/${seg(g.gallery_id)}` }, g.gallery_id)],
      ["description", (g) => g.description],
      ["subjects", (g) => g.subjects],
      ["templates", (g) => g.templates],
      ["similarity ≥", (g) => number(g.thresholds.similarity_min)],
      ["created", (g) => when(g.created_at)],
      ["", (g) => (g.gallery_id === "default" ? "" : el("button.danger.delete-gallery", { type: "button", on: { click: () => deleteGallery(g, () => show(offset)) } }, "Delete…"))],
    ],
    infos,
    { rowAttributes: (g) => ({ dataset: { gallery: g.gallery_id } }) },
  );
  return el("div", {}, rows, pager(offset, PAGE, page.total, show));
}

async function deleteGallery(info, done) {
  const sure = await confirmErase(
    `Delete gallery ${info.gallery_id}?`,
    `This erases gallery "${info.gallery_id}" with its ${info.subjects} subjects and ${info.templates} templates. ` +
      "They are never returned again, and the next compaction removes them from storage. This cannot be undone.",
    `Delete ${info.gallery_id}`,
  );
  if (!sure) return;
  await attempt(async () => {
    const erased = await call(`galleries/${seg(info.gallery_id)}`, { method: "DELETE" });
    if (await done()) showBanner(`Deleted gallery ${erased.gallery_id}: ${erased.templates_erased} templates erased.`, "ok");
  });
}

async function subjectsView(me, galleryId, subjectId) {
  const root = el("section", {},
    el("p", {}, el("a", { href: "#/galleries" }, "Galleries"), " / ", galleryId),
    el("h1", {}, `Subjects of ${galleryId}`));
  if (!may(me, "enrol")) {
    root.append(el("p", {}, `The key's role (${me.role}) may not read subjects.`));
    return root;
  }
  const detail = el("div#subject-detail");
  const listing = el("div.listing#subject-list");
  const show = (offset) => attempt(async () => {
    const page = await call(`galleries/${seg(galleryId)}/subjects`, { query: { offset, limit: SUBJECT_PAGE } });
    listing.replaceChildren(
      table([["subject", (s) => el("a", { href: `#/galleries/${seg(galleryId)}/${seg(s)}` }, s)]], page.subject_ids, {
        rowAttributes: (s) => ({ dataset: { subject: s } }),
        empty: "No subjects enrolled in this gallery.",
      }),
      pager(offset, SUBJECT_PAGE, page.total, show));
  });
  root.append(el("div.columns", {}, listing, detail));
  await show(0);
  if (subjectId) await attempt(async () => detail.replaceChildren(await subjectDetail(galleryId, subjectId)));
  return root;
}

async function subjectDetail(galleryId, subjectId) {
  const subject = await call(`galleries/${seg(galleryId)}/subjects/${seg(subjectId)}`);
  const erase = el("button.danger#subject-erase", { type: "button" }, "Erase subject…");
  erase.addEventListener("click", async () => {
    const count = subject.templates.length;
    const sure = await confirmErase(
      `Erase subject ${subjectId}?`,
      `This erases subject "${subjectId}" of gallery "${galleryId}": its ${count} template${count === 1 ? "" : "s"} ` +
        "(no photo is kept by the service). It is never returned by a search again. This cannot be undone.",
      `Erase ${subjectId}`,
    );
    if (!sure) return;
    await attempt(async () => {
      const erased = await call(`galleries/${seg(galleryId)}/subjects/${seg(subjectId)}`, { method: "DELETE" });
      flashAfterRoute(`Erased subject ${erased.subject_id}: templates ${erased.erased_template_ids.join(", ")}.`);
      location.hash = `#/galleries/${seg(galleryId)}`;
    }, erase);
  });
  return el("div.panel", {},
    el("h2", {}, subjectId),
    facts([["gallery", subject.gallery_id], ["shard", subject.shard], ["templates", subject.templates.length]]),
    table(
      [
        ["template", (t) => t.template_id],
        ["enrolled", (t) => when(t.enrolled_at)],
        ["quality", (t) => number(t.quality)],
      ],
      subject.templates,
    ),
    erase);
}
