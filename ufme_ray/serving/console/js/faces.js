// A photo on a canvas with every face's box drawn over it, in the image's own pixels (the
// coordinates the API answers with). Clicking a face selects it.
import { el, number, table } from "./ui.js";

const TONES = { pass: "#1a7f37", fail: "#cf222e", unknown: "#bf8700", plain: "#0969da", selected: "#8250df" };

export async function faceView(blob, onSelect) {
  const image = new Image();
  const url = URL.createObjectURL(blob);
  try {
    image.src = url;
    await image.decode();
  } finally {
    URL.revokeObjectURL(url);
  }
  const canvas = el("canvas.photo", { width: image.naturalWidth, height: image.naturalHeight });
  let faces = [];
  let selected = null;

  function draw() {
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0);
    const line = Math.max(2, Math.round(canvas.width / 250));
    context.font = `bold ${line * 8}px sans-serif`;
    faces.forEach((face, index) => {
      const [x1, y1, x2, y2] = face.box;
      const tone = TONES[index === selected ? "selected" : face.tone || "plain"];
      context.lineWidth = index === selected ? line * 2 : line;
      context.strokeStyle = context.fillStyle = tone;
      context.strokeRect(x1, y1, x2 - x1, y2 - y1);
      const label = face.label || String(index + 1);
      const width = context.measureText(label).width + line * 2;
      context.fillRect(x1, Math.max(0, y1 - line * 9), width, line * 9);
      context.fillStyle = "#fff";
      context.fillText(label, x1 + line, Math.max(line * 8, y1 - line));
    });
  }

  canvas.addEventListener("click", (event) => {
    const rect = canvas.getBoundingClientRect();
    const x = ((event.clientX - rect.left) * canvas.width) / rect.width;
    const y = ((event.clientY - rect.top) * canvas.height) / rect.height;
    // The smallest box under the click: a face in front of a larger one stays reachable.
    const hits = faces
      .map((face, index) => ({ index, area: (face.box[2] - face.box[0]) * (face.box[3] - face.box[1]), box: face.box }))
      .filter(({ box }) => x >= box[0] && x <= box[2] && y >= box[1] && y <= box[3])
      .sort((a, b) => a.area - b.area);
    if (!hits.length || !onSelect) return;
    selected = hits[0].index;
    draw();
    onSelect(selected);
  });

  draw();
  return {
    element: el("div.photo-frame", {}, canvas),
    canvas,
    // faces: [{box, tone, label}]
    show(next, { select = null } = {}) {
      faces = next;
      selected = select;
      draw();
    },
    select(index) {
      selected = index;
      draw();
    },
  };
}

// Every gate of a face: score, rule and threshold, whether it passed, whether it was enforced.
export function gatesTable(face) {
  const rows = Object.entries(face.gates).map(([name, gate]) => ({ name, ...gate }));
  return table(
    [
      ["gate", (g) => g.name],
      ["score", (g) => number(g.score)],
      ["threshold", (g) => (g.threshold === null ? "—" : `${g.rule} ${g.threshold}`)],
      ["status", (g) => el(`span.status.${g.status}`, {}, g.status)],
      ["enforced", (g) => (g.enforced ? "yes" : "no")],
    ],
    rows,
  );
}

// One line about a face: detection, quality, liveness, morph, capture.
export function faceFacts(face) {
  const morph = face.morph.status === "scored" ? number(face.morph.score) : face.morph.status;
  return `capture ${face.capture} · detection ${number(face.detection_score)} · quality ${number(face.quality)} · ` +
    `liveness ${number(face.liveness)} · morph ${morph}`;
}

// A gate verdict for drawing: the face failed a gate (only an enforced one counts, unless
// `anyGate`: analyze enforces none, yet its failures predict an enrolment's).
export function toneOf(face, { anyGate = false } = {}) {
  return Object.values(face.gates).some((g) => g.status === "fail" && (anyGate || g.enforced)) ? "fail" : "pass";
}
