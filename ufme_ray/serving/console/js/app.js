// The console's shell: sign-in, the left navigation and the screen router (#/screen/...).
import { forgetKey, signIn, storedKey } from "./api.js";
import { clearBanner, el, showError, showFlash } from "./ui.js";
import { stopCameras } from "./photo.js";
import { auditScreen } from "./screens/audit.js";
import { enrolScreen } from "./screens/enrol.js";
import { galleriesScreen } from "./screens/galleries.js";
import { matchScreen } from "./screens/match.js";
import { operationsScreen } from "./screens/operations.js";

// Each screen: the operation group it needs (from the key's grants) and what draws it.
const SCREENS = {
  galleries: { needs: ["admin", "enrol"], render: galleriesScreen },
  enrol: { needs: ["enrol"], render: enrolScreen },
  match: { needs: ["search"], render: matchScreen },
  operations: { needs: ["admin", "enrol"], render: operationsScreen },
  audit: { needs: ["admin"], render: auditScreen },
};

let me = null;

function allowed(name) {
  return SCREENS[name].needs.some((group) => me.grants.includes(group));
}

async function route() {
  stopCameras();
  clearBanner();
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const first = Object.keys(SCREENS).find(allowed);
  if (!SCREENS[name] || !allowed(name)) {
    location.replace(`#/${first}`);
    return;
  }
  for (const link of document.querySelectorAll("nav.side a")) {
    link.classList.toggle("current", link.dataset.screen === name);
  }
  const screen = document.getElementById("screen");
  screen.replaceChildren(el("p.loading", {}, "Loading…"));
  screen.dataset.screen = name;
  let content;
  try {
    content = await SCREENS[name].render(me, rest);
  } catch (error) {
    showError(error);
    content = el("p.empty", {}, "This screen could not be loaded; the message above says why.");
  }
  // A later navigation may have replaced this screen while it loaded.
  if (screen.dataset.screen === name) screen.replaceChildren(content);
  showFlash();
}

function showSignedIn() {
  document.getElementById("sign-in-screen").hidden = true;
  document.getElementById("console").hidden = false;
  const galleries = me.galleries === "*" ? "every gallery" : `galleries ${me.galleries.join(", ")}`;
  const whoami = document.getElementById("whoami");
  whoami.textContent = `${me.key_id} · ${me.role} · ${galleries}`;
  whoami.hidden = false;
  document.getElementById("sign-out").hidden = false;
  for (const link of document.querySelectorAll("nav.side a")) link.hidden = !allowed(link.dataset.screen);
  route();
}

function showSignIn() {
  me = null;
  stopCameras();
  document.getElementById("console").hidden = true;
  document.getElementById("whoami").hidden = true;
  document.getElementById("sign-out").hidden = true;
  document.getElementById("sign-in-screen").hidden = false;
  document.getElementById("key-input").focus();
}

async function start() {
  document.getElementById("banner-close").addEventListener("click", clearBanner);
  document.getElementById("sign-out").addEventListener("click", () => {
    forgetKey();
    clearBanner();
    showSignIn();
  });
  document.getElementById("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("key-input");
    const button = document.getElementById("sign-in");
    button.disabled = true;
    try {
      clearBanner();
      me = await signIn(input.value.trim());
      input.value = "";
      showSignedIn();
    } catch (error) {
      showError(error);
    } finally {
      button.disabled = false;
    }
  });
  window.addEventListener("hashchange", () => { if (me) route(); });

  const key = storedKey();
  if (!key) {
    showSignIn();
    return;
  }
  try {
    me = await signIn(key);
    showSignedIn();
  } catch (error) {
    // A key revoked since: sign in again.
    forgetKey();
    showSignIn();
    showError(error);
  }
}

start();
