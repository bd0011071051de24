// Headless Debian chromium through playwright-core (webapp/package-lock.json), loopback only:
// every host but 127.0.0.1 and localhost is unresolvable, background networking is off
// (the flags of ../shared/tools/sandbox-e2e/run.sh).
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(path.join(root, "webapp", "package.json"));
export const { chromium } = require("playwright-core");

export const FLAGS = [
  "--no-sandbox", "--disable-gpu",
  "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
  "--no-proxy-server", "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--disable-default-apps", "--disable-extensions", "--disable-breakpad", "--disable-domain-reliability",
  "--disable-client-side-phishing-detection", "--no-first-run", "--no-default-browser-check",
  "--metrics-recording-only", "--no-pings", "--disable-field-trial-config", "--password-store=basic",
  "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,AutofillServerCommunication,CertificateTransparencyComponentUpdater,NetworkTimeServiceQuerying,InterestFeedContentSuggestions",
];

export async function launch() {
  return chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true, args: FLAGS });
}
