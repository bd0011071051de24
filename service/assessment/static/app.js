// The calf pain assessment: read the patient's recent findings, render the Questionnaire with
// LHC-Forms, and on save turn the answers into Observations ($extract on the calf-cds service,
// which sees the answers but never a token) and write them to the EHR's FHIR server.
import { LaunchError, completeEhrLaunch, fhirFetch, openServerContext, savedContext } from "./smart.js";

const QUESTIONNAIRE = new URL("../fhir/Questionnaire/calf-pain-assessment", location.href).href;
const EXTRACT = new URL("../fhir/QuestionnaireResponse/$extract", location.href).href;
const LINK_PERIOD = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-observationLinkPeriod";
const SNOMED = "http://snomed.info/sct";
const SIDES = { "32153003": "left", "62175007": "right" };
const READ_STATUSES = new Set(["final", "amended", "corrected"]);
const MAX_PAGES = 10;
let QUESTIONNAIRE_URL = ""; // the canonical URL, from the Questionnaire as served

const $ = (id) => document.getElementById(id);

function say(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function context() {
  const params = new URLSearchParams(location.search);
  let found;
  if (params.has("code")) found = await completeEhrLaunch(params);
  else if (params.has("fhirServiceUrl")) found = openServerContext(params);
  else found = savedContext();
  if (!found) throw new LaunchError("open this app from the EHR, or with ?fhirServiceUrl=...&patient=...");
  history.replaceState(null, "", location.pathname); // the code and the context leave the address bar
  return found;
}

async function json(answer, what) {
  if (!answer.ok) throw new Error(`${what} answered ${answer.status}`);
  return answer.json();
}

async function observations(ctx) {
  const found = [];
  let next = `Observation?patient=${encodeURIComponent(ctx.patient)}&_count=200`;
  for (let page = 0; next && page < MAX_PAGES; page += 1) {
    const bundle = await json(await fhirFetch(ctx, next), "the FHIR server");
    for (const entry of bundle.entry || []) if (entry.resource?.resourceType === "Observation") found.push(entry.resource);
    next = (bundle.link || []).find((link) => link.relation === "next")?.url;
  }
  return found;
}

function walk(items, visit) {
  for (const item of items || []) {
    visit(item);
    walk(item.item, visit);
  }
}

const same = (a, b) => a && b && a.system === b.system && a.code === b.code;
const codings = (concept) => (concept && Array.isArray(concept.coding) ? concept.coding : []);
const when = (o) => Date.parse(o.effectiveDateTime || o.effectivePeriod?.start || o.issued || "") || 0;

// The answer an Observation gives to a question, as a QuestionnaireResponse answer, or null.
function answerFrom(item, observation) {
  const options = (item.answerOption || []).map((o) => o.valueCoding);
  if (item.type === "boolean" && typeof observation.valueBoolean === "boolean") return { valueBoolean: observation.valueBoolean };
  if (item.type === "quantity" && observation.valueQuantity && typeof observation.valueQuantity.value === "number") {
    const unit = item.extension?.find((e) => e.valueCoding)?.valueCoding?.code;
    if (observation.valueQuantity.code === unit) return { valueQuantity: observation.valueQuantity };
  }
  if (item.type === "choice") {
    const coded = codings(observation.valueCodeableConcept).map((c) => options.find((o) => same(o, c))).find(Boolean);
    if (coded) return { valueCoding: coded };
    const asCode = codings(observation.code).map((c) => options.find((o) => same(o, c))).find(Boolean);
    if (asCode && observation.valueBoolean !== false) return { valueCoding: asCode };
  }
  return null;
}

// Pre-fill: each question's most recent answer within its look-back (observationLinkPeriod).
function prefill(questionnaire, found, now) {
  const prefilled = [];
  const usable = found.filter((o) => READ_STATUSES.has(o.status)).sort((a, b) => when(b) - when(a));
  walk(questionnaire.item, (item) => {
    if (item.type === "group" || !item.code) return;
    const days = item.extension?.find((e) => e.url === LINK_PERIOD)?.valueDuration?.value;
    const recent = usable.filter((o) => !days || now - when(o) <= days * 86400000);
    const options = (item.answerOption || []).map((o) => o.valueCoding);
    const matching = recent.filter((o) => codings(o.code).some((c) => same(c, item.code[0]) || options.some((x) => same(x, c))));
    if (item.linkId === "calf_pain") {
      const sides = new Set(matching.filter((o) => o.valueBoolean !== false)
        .flatMap((o) => codings(o.bodySite).map((c) => (c.system === SNOMED ? SIDES[c.code] : null))).filter(Boolean));
      const key = sides.size === 2 ? "51440002" : sides.has("left") ? "7771000" : sides.has("right") ? "24028007" : null;
      const option = options.find((o) => o.code === key);
      if (option) {
        item.initial = [{ valueCoding: option }];
        prefilled.push(item.linkId);
      }
      return;
    }
    for (const observation of matching) {
      const answer = answerFrom(item, observation);
      if (answer) {
        item.initial = [answer];
        prefilled.push(item.linkId);
        return;
      }
    }
  });
  return prefilled;
}

// The findings the card was missing (appContext), marked in the form and listed above it.
function markNeeded(questionnaire, missing) {
  const wanted = new Set(missing);
  const marked = [];
  walk(questionnaire.item, (item) => {
    if (item.type !== "group" && wanted.has(item.linkId)) {
      item.text = `◆ ${item.text}`;
      marked.push(item.text);
    }
  });
  if (marked.length) {
    $("needed-list").replaceChildren(...marked.map((text) => Object.assign(document.createElement("li"), { textContent: text })));
    $("needed").hidden = false;
  }
}

async function showPatient(ctx) {
  const patient = await json(await fhirFetch(ctx, `Patient/${encodeURIComponent(ctx.patient)}`), "the FHIR server");
  const name = (patient.name || [])[0];
  const shown = name ? [...(name.given || []), name.family].filter(Boolean).join(" ") : `Patient/${ctx.patient}`;
  $("patient").textContent = `${shown}${patient.birthDate ? ` · born ${patient.birthDate}` : ""}`;
}

function response(ctx) {
  const qr = LForms.Util.getFormFHIRData("QuestionnaireResponse", "R4", $("form-container"));
  const out = {
    resourceType: "QuestionnaireResponse", questionnaire: QUESTIONNAIRE_URL, status: "completed",
    subject: { reference: `Patient/${ctx.patient}` }, authored: new Date().toISOString(), item: qr.item || [],
  };
  if (ctx.user) out.author = { reference: ctx.user };
  return out;
}

async function submit(ctx) {
  $("submit").disabled = true;
  say("Saving…");
  try {
    const extracted = await fetch(EXTRACT, {
      method: "POST", body: JSON.stringify(response(ctx)), headers: { "Content-Type": "application/fhir+json" },
    });
    const bundle = await extracted.json();
    if (!extracted.ok) throw new Error(bundle.issue?.[0]?.diagnostics || `$extract answered ${extracted.status}`);
    const written = await fhirFetch(ctx, "", {
      method: "POST", body: JSON.stringify(bundle), headers: { "Content-Type": "application/fhir+json" },
    }).catch(() => null);
    if (!written || !written.ok) throw new Error(`the FHIR server did not accept the findings (${written ? written.status : "no answer"})`);
    const result = await written.json();
    const locations = (result.entry || []).map((e) => e.response?.location || "").filter(Boolean);
    const count = bundle.entry.length - 1;
    $("result-text").textContent = `${count} finding${count === 1 ? "" : "s"} written to the record. Return to the chart: the next card reads them.`;
    $("result-list").replaceChildren(...locations.map((l) => Object.assign(document.createElement("li"), { textContent: l })));
    $("result").hidden = false;
    say("Saved.");
  } catch (error) {
    say(`Not saved: ${error.message}`, true);
    $("submit").disabled = false;
  }
}

async function main() {
  const ctx = await context();
  const [questionnaire, found] = await Promise.all([
    fetch(QUESTIONNAIRE).then((a) => json(a, "the calf-cds service")), observations(ctx), showPatient(ctx),
  ]);
  QUESTIONNAIRE_URL = questionnaire.url;
  const prefilled = prefill(questionnaire, found, Date.now());
  markNeeded(questionnaire, ctx.appContext?.missing || []);
  await LForms.Util.addFormToPage(questionnaire, "form-container", { fhirVersion: "R4" });
  $("submit").disabled = false;
  $("submit").addEventListener("click", () => submit(ctx));
  say(prefilled.length ? `${prefilled.length} answer${prefilled.length === 1 ? "" : "s"} filled in from the record; check them.` : "Answer what you have examined.");
  document.body.dataset.ready = "true";
}

main().catch((error) => say(`Could not open the assessment: ${error.message}`, true));
