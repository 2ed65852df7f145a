// The gallery field of the enrol and identify screens: free text with the galleries the key may
// use as suggestions (an admin key's from the gallery list).
import { call } from "../api.js";
import { el, galleryChoices, may } from "../ui.js";

// {input, element}: the field to read, and what to place in the form (the field and its suggestions).
export async function galleryInput(me, id, { placeholder } = {}) {
  const listed = may(me, "admin") ? (await call("galleries", { query: { limit: 1000 } })).galleries.map((g) => g.gallery_id) : [];
  const choices = galleryChoices(me, listed);
  const input = el(`input#${id}`, { required: true, list: `${id}-choices`, value: choices[0], placeholder, spellcheck: "false" });
  const element = el("span", {}, input, el(`datalist#${id}-choices`, {}, choices.map((g) => el("option", { value: g }))));
  return { input, element };
}
