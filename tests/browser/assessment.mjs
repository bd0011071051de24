// Drive the calf pain assessment in headless Chromium with the keyboard only.
//
//   node assessment.mjs '<plan JSON>'
//   plan: {url, answers: {linkId: true|false|number|"option text"}, shot: "name", submit: true|false}
//
// Opens plan.url (the open-server launch, or the EHR launch URL), waits for the form, then walks
// it with Tab: at each question it finds (document.activeElement) it answers from plan.answers
// with keys only — arrows in a Yes/No/Not answered radio group, typing in a number field, typing
// and Enter in a list — and moves on with Tab until it reaches the save button, which it presses
// with Enter. Prints a JSON report: the questions shown (in Tab order), the answers given, the
// app's status and result, every request the page made (and whether it carried a bearer token),
// console errors, page errors. Screenshots go to $ARTIFACTS.
import { launch } from "./chromium.mjs";

const plan = JSON.parse(process.argv[2]);
const artifacts = process.env.ARTIFACTS || ".";
const browser = await launch();
const report = { shown: [], answered: [], requests: [], console: [], pageErrors: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on("console", (m) => { if (m.type() === "error") report.console.push(m.text()); });
  page.on("pageerror", (e) => report.pageErrors.push(e.message));
  page.on("request", (r) => report.requests.push({
    method: r.method(), url: r.url(), bearer: /^Bearer /.test(r.headers().authorization || ""),
  }));
  await page.goto(plan.url);
  await page.waitForSelector("body[data-ready=true], #status.error", { timeout: 60000 });
  report.status = await page.locator("#status").textContent();
  report.needed = await page.locator("#needed-list li").allTextContents();
  if (await page.locator("body[data-ready=true]").count()) {
    await page.screenshot({ path: `${artifacts}/${plan.shot}-1-opened.png`, fullPage: true });
    await walk(page);
    await page.screenshot({ path: `${artifacts}/${plan.shot}-2-answered.png`, fullPage: true });
    if (plan.submit) {
      await page.keyboard.press("Enter"); // focus is on the save button
      await page.waitForSelector("#result:not([hidden]), #status.error", { timeout: 60000 });
      report.status = await page.locator("#status").textContent();
      report.result = await page.locator("#result-text").textContent();
      await page.screenshot({ path: `${artifacts}/${plan.shot}-3-saved.png`, fullPage: true });
    }
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(report));

// Where the focus is: {linkId, kind} of a question field, "submit", or null.
async function focused(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    if (!el) return null;
    if (el.id === "submit") return { kind: "submit" };
    const name = el.getAttribute("name") || "";
    if (el.type === "radio" && name.startsWith("radiogroup_")) {
      const radios = [...document.getElementsByName(name)];
      return { kind: "radio", linkId: name.slice(11).split("/")[0], index: radios.indexOf(el),
               checked: radios.findIndex((r) => r.checked), count: radios.length };
    }
    const id = el.id || "";
    if (id.startsWith("unit_")) return { kind: "unit", linkId: id.slice(5).split("/")[0] };
    if (el.getAttribute("role") === "combobox") return { kind: "list", linkId: id.split("/")[0], value: el.value };
    if (el.tagName === "INPUT") return { kind: "text", linkId: id.split("/")[0], value: el.value };
    return { kind: "other" };
  });
}

async function walk(page) {
  await page.locator("body").press("Tab"); // from the page into the form
  for (let steps = 0; steps < 400; steps += 1) {
    const at = await focused(page);
    if (at && at.kind === "submit") return;
    if (at && at.linkId && !report.shown.includes(at.linkId)) {
      report.shown.push(at.linkId);
      if (Object.hasOwn(plan.answers, at.linkId)) await answer(page, at, plan.answers[at.linkId]);
    }
    await page.keyboard.press("Tab");
  }
  throw new Error("never reached the save button");
}

async function answer(page, at, value) {
  if (at.kind === "radio") {
    // The group is Yes, No, Not answered; arrows move the choice (and the focus) within it.
    const target = value === true ? 0 : value === false ? 1 : 2;
    let position = at.checked >= 0 ? at.checked : at.index;
    while (position !== target) {
      await page.keyboard.press(position > target ? "ArrowLeft" : "ArrowRight");
      position += position > target ? -1 : 1;
    }
  } else if (at.kind === "text") {
    await page.keyboard.press("Control+A");
    await page.keyboard.type(String(value));
  } else if (at.kind === "list") {
    await page.keyboard.press("Control+A");
    await page.keyboard.type(String(value));
    await page.waitForTimeout(300);
    await page.keyboard.press("ArrowDown");
    await page.keyboard.press("Enter");
  } else {
    return;
  }
  await page.waitForTimeout(150); // let enableWhen open or close the groups that depend on this
  report.answered.push(at.linkId);
}
