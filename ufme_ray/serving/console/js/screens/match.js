// Identify (1:N) and verify (1:1) by photo or webcam: every face drawn with its decision, the
// candidates with score and estimated false-match rate; "unknown" said plainly.
import { call, seg } from "../api.js";
import { faceFacts, faceView, gatesTable } from "../faces.js";
import { photoPicker } from "../photo.js";
import { clearBanner, el, facts, number, showError, table } from "../ui.js";
import { galleryInput } from "./pickers.js";

const TONE = { match: "pass", unknown: "unknown", rejected: "fail" };

export async function matchScreen(me) {
  const { input: galleries, element: galleriesField } = await galleryInput(me, "match-galleries");
  const mode = el("select#match-mode", {}, el("option", { value: "identify" }, "Identify (1:N)"), el("option", { value: "verify" }, "Verify (1:1)"));
  const topK = el("input#match-top-k", { type: "number", min: 1, max: 100, value: 5 });
  const subject = el("input#match-subject", { placeholder: "subject id", spellcheck: "false" });
  const topKField = el("label", {}, "Candidates ", topK);
  const subjectField = el("label", { hidden: true }, "Subject ", subject);
  const submit = el("button#match-submit", { type: "button", disabled: true }, "Identify");
  const stage = el("div.stage#match-stage");
  const result = el("div#match-result");
  let photo = null;
  let view = null;

  mode.addEventListener("change", () => {
    const verify = mode.value === "verify";
    topKField.hidden = verify;
    subjectField.hidden = !verify;
    subject.required = verify;
    submit.textContent = verify ? "Verify" : "Identify";
    result.replaceChildren();
  });

  async function onPhoto(next) {
    photo = next;
    clearBanner();
    result.replaceChildren();
    view = await faceView(photo.blob);
    stage.replaceChildren(view.element, el("div", {}, el("p.capture", {}, `Capture: ${photo.capture}`), result));
    submit.disabled = false;
  }

  submit.addEventListener("click", async () => {
    if (!galleries.reportValidity() || !subject.reportValidity()) return;
    const ids = galleries.value.split(",").map((g) => g.trim()).filter(Boolean);
    const form = new FormData();
    form.append("image", photo.blob, photo.name);
    form.append("capture", photo.capture);
    submit.disabled = true;
    clearBanner();
    result.replaceChildren(el("p.loading", {}, "Searching…"));
    try {
      if (mode.value === "verify") {
        form.append("subject_id", subject.value.trim());
        const answer = await call(`galleries/${seg(ids[0])}/verify`, { method: "POST", form });
        view.show([{ box: answer.face.box, tone: answer.match ? "pass" : "fail", label: answer.match ? "match" : "no match" }]);
        result.replaceChildren(verification(answer));
      } else {
        form.append("top_k", topK.value);
        form.append("galleries", ids.join(","));
        const answer = await call("identify", { method: "POST", form });
        result.replaceChildren(identification(answer, view));
      }
    } catch (error) {
      result.replaceChildren();
      showError(error);
    } finally {
      submit.disabled = false;
    }
  });

  return el("section", {},
    el("h1", {}, "Identify / Verify"),
    el("form.inline", { on: { submit: (event) => event.preventDefault() } },
      el("label", {}, "Mode ", mode), el("label", {}, "Galleries ", galleriesField), topKField, subjectField, submit),
    el("p.note", {}, "Several galleries: separate them with commas (identify only)."),
    photoPicker("match-photo", (next) => onPhoto(next).catch(showError)),
    stage);
}

function area(face) {
  const [x1, y1, x2, y2] = face.face.box;
  return (x2 - x1) * (y2 - y1);
}

function identification(answer, view) {
  // The largest face first: the person the photo is of, before the people behind them.
  const faces = [...answer.faces].sort((a, b) => area(b) - area(a));
  view.show(faces.map((f, index) => ({
    box: f.face.box,
    tone: TONE[f.decision.status],
    label: `${index + 1}: ${f.decision.status === "match" ? f.decision.subject_id : f.decision.status}`,
  })));
  const t = answer.thresholds;
  const summary = el("p.meta", {}, `Searched ${answer.galleries.join(", ")} · match when similarity ≥ ${number(t.similarity_min)}`);
  if (!faces.length) return el("div", {}, summary, el("p.decision.unknown", {}, "No face found in this photo."));
  return el("div", {}, summary, faces.map((f, index) => faceResult(f, index)));
}

function faceResult(f, index) {
  const d = f.decision;
  const headline = d.status === "match" ? `match: ${d.subject_id} (gallery ${d.gallery_id}, score ${number(d.score)})`
    : d.status === "unknown" ? "unknown: no enrolled subject scores at or above the threshold"
      : `rejected: ${d.reason}`;
  return el("div.panel.face-result", { dataset: { decision: d.status } },
    el("h2", {}, `Face ${index + 1}`),
    el(`p.decision.${d.status}`, {}, headline),
    el("p.meta", {}, faceFacts(f.face)),
    table(
      [
        ["rank", (c) => f.candidates.indexOf(c) + 1],
        ["subject", (c) => c.subject_id],
        ["gallery", (c) => c.gallery_id],
        ["score", (c) => number(c.score)],
        ["estimated FAR", (c) => (c.estimated_far === null ? "uncalibrated" : c.estimated_far.toExponential(1))],
        ["template", (c) => c.template_id],
      ],
      f.candidates,
      { rowAttributes: (c) => ({ class: "candidate", dataset: { subject: c.subject_id } }), empty: "No candidates." },
    ),
    el("details", {}, el("summary", {}, "Gates"), gatesTable(f.face)));
}

function verification(answer) {
  return el("div.panel.face-result", { dataset: { decision: answer.match ? "match" : "no-match" } },
    el(`p.decision.${answer.match ? "match" : "unknown"}`, {}, answer.match ? `match: ${answer.subject_id}` : `no match with ${answer.subject_id}`),
    facts([
      ["similarity", `${number(answer.similarity)} (threshold ${number(answer.threshold)})`],
      ["estimated FAR", answer.estimated_far === null ? "uncalibrated" : answer.estimated_far.toExponential(1)],
      ["gallery", answer.gallery_id], ["best template", answer.template_id], ["face", faceFacts(answer.face)],
    ]),
    gatesTable(answer.face));
}
