// SMART App Launch 2.0 for the calf pain assessment: EHR launch (authorization code + PKCE, a
// public client) and the open-server launch of sandboxes (?fhirServiceUrl=...&patient=...).
// Tokens live in this tab's sessionStorage only: they are sent to the EHR's FHIR server and
// token endpoint, never to the calf-cds service.

export const SCOPES = [
  "launch", "openid", "fhirUser",
  "patient/Patient.r", "patient/Observation.rs", "patient/Condition.rs",
  "patient/Observation.c", "patient/QuestionnaireResponse.c",
].join(" ");
export const DEFAULT_CLIENT_ID = "calf-cds-assessment";
const CONTEXT_KEY = "calf-cds-context";
const PENDING_PREFIX = "calf-cds-pending:";

export class LaunchError extends Error {}

function base64url(bytes) {
  let text = "";
  for (const byte of new Uint8Array(bytes)) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function randomString(size) {
  return base64url(crypto.getRandomValues(new Uint8Array(size)));
}

export function httpUrl(text, what) {
  let url;
  try {
    url = new URL(text);
  } catch {
    throw new LaunchError(`${what} is not a URL`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw new LaunchError(`${what} must be an http(s) URL`);
  return url.href.replace(/\/$/, "");
}

export function redirectUri() {
  return new URL("./", location.href).href;
}

// EHR launch, step 1 (launch.html): discovery, then the authorize redirect with PKCE (S256).
export async function beginEhrLaunch(params) {
  const iss = httpUrl(params.get("iss") || "", "iss");
  const launch = params.get("launch");
  if (!launch) throw new LaunchError("the EHR sent no launch parameter");
  const clientId = params.get("client_id") || DEFAULT_CLIENT_ID;
  const answer = await fetch(`${iss}/.well-known/smart-configuration`, { headers: { Accept: "application/json" } });
  if (!answer.ok) throw new LaunchError(`the EHR's SMART configuration answered ${answer.status}`);
  const config = await answer.json();
  const authorize = httpUrl(config.authorization_endpoint || "", "authorization_endpoint");
  const token = httpUrl(config.token_endpoint || "", "token_endpoint");
  const methods = config.code_challenge_methods_supported || [];
  if (!methods.includes("S256")) throw new LaunchError("the EHR does not support PKCE S256");
  const verifier = randomString(48);
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  const state = randomString(24);
  sessionStorage.setItem(PENDING_PREFIX + state, JSON.stringify({ iss, token, verifier, clientId }));
  const query = new URLSearchParams({
    response_type: "code", client_id: clientId, redirect_uri: redirectUri(), launch, scope: SCOPES,
    state, aud: iss, code_challenge: challenge, code_challenge_method: "S256",
  });
  location.assign(`${authorize}?${query}`);
}

function fhirUserReference(idToken) {
  // The id_token's fhirUser names the user (performer of the findings). It comes straight from the
  // EHR's token endpoint over TLS; the EHR's FHIR server decides what the user may write.
  try {
    const payload = JSON.parse(atob(idToken.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    const match = /(Practitioner|PractitionerRole|Patient|RelatedPerson)\/([A-Za-z0-9\-.]{1,64})$/.exec(payload.fhirUser || "");
    return match ? `${match[1]}/${match[2]}` : null;
  } catch {
    return null;
  }
}

function parseAppContext(text) {
  if (!text) return { missing: [] };
  try {
    const value = JSON.parse(text);
    const missing = Array.isArray(value.missing) ? value.missing.filter((m) => typeof m === "string") : [];
    return { missing: missing.slice(0, 100) };
  } catch {
    return { missing: [] };
  }
}

// EHR launch, step 2 (index.html?code=...&state=...): the token, with the launch context.
export async function completeEhrLaunch(params) {
  const state = params.get("state") || "";
  const pending = JSON.parse(sessionStorage.getItem(PENDING_PREFIX + state) || "null");
  sessionStorage.removeItem(PENDING_PREFIX + state);
  if (!pending) throw new LaunchError("unknown or used launch state: start again from the EHR");
  const body = new URLSearchParams({
    grant_type: "authorization_code", code: params.get("code") || "", redirect_uri: redirectUri(),
    client_id: pending.clientId, code_verifier: pending.verifier,
  });
  const answer = await fetch(pending.token, {
    method: "POST", body, headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
  });
  if (!answer.ok) throw new LaunchError(`the EHR refused the token request (${answer.status})`);
  const token = await answer.json();
  if (!token.access_token || !token.patient) throw new LaunchError("the EHR gave no access token or no patient");
  return saveContext({
    fhirBase: pending.iss, accessToken: token.access_token, patient: String(token.patient),
    user: token.id_token ? fhirUserReference(token.id_token) : null,
    appContext: parseAppContext(token.appContext), launch: "ehr",
  });
}

// Open-server launch (sandboxes): no authorization at all.
export function openServerContext(params) {
  const patient = params.get("patient") || "";
  if (!/^[A-Za-z0-9\-.]{1,64}$/.test(patient)) throw new LaunchError("patient must be a FHIR id");
  const user = params.get("user");
  return saveContext({
    fhirBase: httpUrl(params.get("fhirServiceUrl") || "", "fhirServiceUrl"), accessToken: null, patient,
    user: user && /^(Practitioner|PractitionerRole)\/[A-Za-z0-9\-.]{1,64}$/.test(user) ? user : null,
    appContext: parseAppContext(params.get("appContext")), launch: "open",
  });
}

function saveContext(context) {
  sessionStorage.setItem(CONTEXT_KEY, JSON.stringify(context));
  return context;
}

export function savedContext() {
  return JSON.parse(sessionStorage.getItem(CONTEXT_KEY) || "null");
}

// A FHIR request to the EHR, with the bearer token when there is one.
export async function fhirFetch(context, path, init = {}) {
  const url = path.startsWith("http") ? path : path ? `${context.fhirBase}/${path}` : context.fhirBase;
  if (url !== context.fhirBase && !url.startsWith(context.fhirBase + "/")) {
    throw new LaunchError("a link led away from the FHIR server");
  }
  const headers = { Accept: "application/fhir+json", ...(init.headers || {}) };
  if (context.accessToken) headers.Authorization = `Bearer ${context.accessToken}`;
  return fetch(url, { ...init, headers });
}
