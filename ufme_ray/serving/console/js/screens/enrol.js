// Enrol: a stored photo (file) or a live one (webcam); every face drawn with its gate scores; in a
// group photo, the face clicked is the one enrolled (its box goes with the request).
import { ApiError, call, seg } from "../api.js";
import { faceFacts, faceView, gatesTable, toneOf } from "../faces.js";
import { photoPicker } from "../photo.js";
import { clearBanner, el, facts, may, number, showBanner, showError } from "../ui.js";
import { galleryInput } from "./pickers.js";

const CAPTURES = {
  stored: "stored photo (a file): quality and morph enforced, liveness not applicable",
  live: "live capture (webcam): liveness enforced as well",
};

export async function enrolScreen(me) {
  const { input: gallery, element: galleryField } = await galleryInput(me, "enrol-gallery");
  const subject = el("input#enrol-subject", { required: true, placeholder: "e.g. ann-lee", spellcheck: "false" });
  const submit = el("button#enrol-submit", { type: "button", disabled: true }, "Enrol");
  const stage = el("div.stage#enrol-stage");
  const result = el("div#enrol-result");
  let photo = null;
  let view = null;
  let faces = [];
  let chosen = null;

  const facesPanel = el("div#enrol-faces");

  function describeFaces() {
    if (!may(me, "search")) {
      facesPanel.replaceChildren(el("p.note", {}, `This key (role ${me.role}) may not analyze photos, so faces are shown once the service answers; it enrols the dominant face.`));
      return;
    }
    const hint = faces.length === 0 ? "No face found in this photo."
      : faces.length === 1 ? "One face found."
        : chosen === null ? `${faces.length} faces found. Click the face to enrol; without a choice the service enrols the dominant face only if it is clearly the largest.`
          : `${faces.length} faces found; face ${chosen + 1} is chosen.`;
    facesPanel.replaceChildren(el("p.hint", {}, hint), ...faces.map((face, index) =>
      el("div.face", { dataset: { face: index + 1 } },
        el("h3", {}, `Face ${index + 1}${index === chosen ? " (chosen)" : ""}`),
        el("p.meta", {}, faceFacts(face)),
        gatesTable(face))));
  }

  async function onPhoto(next) {
    photo = next;
    chosen = null;
    faces = [];
    result.replaceChildren();
    clearBanner();
    view = await faceView(photo.blob, (index) => { chosen = index; describeFaces(); });
    stage.replaceChildren(view.element, el("div", {}, el("p.capture", {}, `Capture: ${CAPTURES[photo.capture]}`), result, facesPanel));
    submit.disabled = false;
    if (!may(me, "search")) {
      describeFaces();
      return;
    }
    facesPanel.replaceChildren(el("p.loading", {}, "Finding faces…"));
    const form = new FormData();
    form.append("image", photo.blob, photo.name);
    form.append("capture", photo.capture);
    try {
      const analysis = await call("analyze", { method: "POST", form });
      faces = analysis.faces;
      view.show(faces.map((face) => ({ box: face.box, tone: toneOf(face, { anyGate: true }) })));
      describeFaces();
    } catch (error) {
      facesPanel.replaceChildren();
      showError(error);
    }
  }

  submit.addEventListener("click", async () => {
    if (!subject.reportValidity() || !gallery.reportValidity()) return;
    const galleryId = gallery.value.trim();
    const subjectId = subject.value.trim();
    const form = new FormData();
    form.append("image", photo.blob, photo.name);
    form.append("capture", photo.capture);
    if (chosen !== null) form.append("box", faces[chosen].box.join(","));
    submit.disabled = true;
    clearBanner();
    try {
      const enrolled = await call(`galleries/${seg(galleryId)}/subjects/${seg(subjectId)}/faces`, { method: "POST", form });
      view.show([{ box: enrolled.face.box, tone: "pass", label: `${subjectId} ✓` }]);
      showBanner(`Enrolled ${subjectId} in ${galleryId}: template ${enrolled.template_id}.`, "ok");
      result.replaceChildren(enrolledPanel(enrolled));
    } catch (error) {
      showError(error);
      result.replaceChildren(refusalPanel(error, view));
    } finally {
      submit.disabled = false;
    }
  });

  return el("section", {},
    el("h1", {}, "Enrol a face"),
    el("form.inline", { on: { submit: (event) => event.preventDefault() } },
      el("label", {}, "Gallery ", galleryField), el("label", {}, "Subject id ", subject), submit),
    photoPicker("enrol-photo", (next) => onPhoto(next).catch(showError)),
    stage);
}

function enrolledPanel(enrolled) {
  const t = enrolled.thresholds;
  return el("div.panel.ok.enrolled", {},
    el("h2", {}, `Enrolled: ${enrolled.subject_id}`),
    facts([
      ["gallery", enrolled.gallery_id], ["template", enrolled.template_id], ["shard", enrolled.shard],
      ["face", faceFacts(enrolled.face)],
      ["thresholds", `quality ≥ ${number(t.quality_min)} · liveness ≥ ${number(t.liveness_min)} · similarity ≥ ${number(t.similarity_min)}`],
      ["duplicate of", enrolled.duplicate_of ? `${enrolled.duplicate_of.subject_id} (score ${number(enrolled.duplicate_of.score)})` : "none"],
    ]),
    gatesTable(enrolled.face));
}

// What the API said when it refused: the gate with score and threshold, the face it judged.
function refusalPanel(error, view) {
  if (!(error instanceof ApiError)) return el("div");
  const details = error.details || {};
  const parts = [el("h2", {}, `Refused: ${error.code}`), el("p", {}, error.message)];
  if (details.face) {
    view.show([{ box: details.face.box, tone: "fail", label: (details.failed_gates || []).join(", ") || "refused" }]);
    parts.push(el("p.meta", {}, faceFacts(details.face)), gatesTable(details.face));
  }
  if (details.subject_id) parts.push(facts([["matches subject", details.subject_id], ["score", number(details.score)], ["threshold", number(details.threshold)]]));
  return el("div.panel.refused", {}, parts);
}
