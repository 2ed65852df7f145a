// Where a photo comes from: a file (capture "stored") or a picture taken now with the webcam
// (capture "live"). The photo stays in the browser; only the API call carries it.
import { el, showBanner } from "./ui.js";

const streams = new Set();

// Stop every webcam stream this page opened (when the operator leaves the screen).
export function stopCameras() {
  for (const stream of streams) for (const track of stream.getTracks()) track.stop();
  streams.clear();
}

// A picker calling onPhoto({blob, name, capture}) for each photo chosen, dropped or taken.
export function photoPicker(id, onPhoto) {
  const input = el("input", { type: "file", accept: "image/jpeg,image/png,image/webp,image/bmp" });
  input.addEventListener("change", () => {
    if (input.files.length) onPhoto({ blob: input.files[0], name: input.files[0].name, capture: "stored" });
    input.value = "";  // choosing the same file again is a new choice
  });
  const drop = el("label.drop", {}, "Drop a stored photo here, or click to choose a file", input);
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) onPhoto({ blob: file, name: file.name, capture: "stored" });
  });

  const video = el("video.camera", { autoplay: true, muted: true, playsinline: true, hidden: true });
  const take = el("button.take", { type: "button", hidden: true }, "Take picture");
  const start = el("button.webcam", { type: "button" }, "Use webcam (live)");
  start.addEventListener("click", async () => {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showBanner("this browser gives no camera to this page (a camera needs https or localhost)", "error");
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
      streams.add(stream);
      const playing = new Promise((resolve) => video.addEventListener("loadeddata", resolve, { once: true }));
      video.srcObject = stream;
      video.hidden = false;
      await playing;  // a picture needs a frame
      take.hidden = false;
    } catch (error) {
      showBanner(`the camera could not be opened: ${error.message}`, "error");
    }
  });
  take.addEventListener("click", async () => {
    const canvas = el("canvas", { width: video.videoWidth, height: video.videoHeight });
    canvas.getContext("2d").drawImage(video, 0, 0);
    stopCameras();
    video.hidden = take.hidden = true;
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
    onPhoto({ blob, name: "webcam.jpg", capture: "live" });
  });

  return el(`div.picker#${id}`, {},
    drop,
    el("div.camera-row", {}, start, take),
    video,
    el("p.note", {}, "Photos stay in this browser. The service keeps no photo: an enrolment stores only the face's template."));
}
