// Drives Herald's GraphiQL page in Debian's Chromium with every host but
// Herald's blocked, for tests/it/graphiql.rs.
//
//   node graphiql.mjs BASE_URL API_KEY SCREENSHOT_PATH
//
// Prints one JSON report on stdout; the Rust test judges it. Exits non-zero
// (with the reason on stderr) when a step cannot be done at all.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const [base, apiKey, screenshotPath] = process.argv.slice(2);
const CHROMIUM = process.env.HERALD_CHROMIUM ?? "/usr/bin/chromium";
const STEP_TIMEOUT_MS = 30_000;
const axeSource = readFileSync(
  createRequire(import.meta.url).resolve("axe-core/axe.min.js"),
  "utf8",
);

const serviceHost = new URL(base).host;
const report = {
  requested: [],
  blocked: [],
  cspViolations: [],
  pageErrors: [],
  graphqlResponses: [],
};

// Root in a container: Chromium's sandbox needs namespaces it may not get.
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (new URL(url).host === serviceHost) {
      report.requested.push(url);
      return route.continue();
    }
    report.blocked.push(url);
    return route.abort("blockedbyclient");
  });
  page.on("pageerror", (error) => report.pageErrors.push(String(error)));
  // GraphQL's answers, for a failure's report.
  page.on("response", async (response) => {
    if (response.request().method() === "POST") {
      const body = await response.text().catch((error) => String(error));
      report.graphqlResponses.push(`${response.status()} ${body.slice(0, 300)}`);
    }
  });
  // Init scripts run outside the page's CSP, so this sees its violations.
  await page.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener("securitypolicyviolation", (event) =>
      window.__cspViolations.push({
        directive: event.violatedDirective,
        blocked: event.blockedURI,
        source: event.sourceFile,
      }),
    );
  });

  await page.goto(`${base}/graphql`);
  const queryEditor = page.locator(".graphiql-query-editor .CodeMirror");
  await queryEditor.waitFor();

  // The API key, typed into the headers pane; Herald answers introspection
  // to keys only, so GraphiQL then re-fetches the schema with it.
  await page.getByRole("button", { name: "Headers" }).click();
  const headersEditor = page.locator(
    ".graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror",
  );
  await headersEditor.click();
  await page.keyboard.press("ControlOrMeta+A");
  await page.keyboard.insertText(JSON.stringify({ Authorization: `Bearer ${apiKey}` }));
  report.headersPane = await headersEditor.innerText();
  await page.getByRole("button", { name: "Re-fetch GraphQL schema" }).click();

  // The schema, read by GraphiQL's own introspection, in the docs pane.
  await page.getByRole("button", { name: "Show Documentation Explorer" }).click();
  const queryRoot = page
    .locator(".graphiql-doc-explorer-section-content > div")
    .filter({ has: page.locator(".graphiql-doc-explorer-root-type", { hasText: /^query$/ }) })
    .locator(".graphiql-doc-explorer-type-name");
  await queryRoot.click();
  const fieldNames = page.locator(".graphiql-doc-explorer-field-name");
  await fieldNames.first().waitFor();
  report.docsTitle = await page.locator(".graphiql-doc-explorer-title").innerText();
  report.queryFields = await fieldNames.allInnerTexts();

  // A query typed into the editor and run with those headers.
  await queryEditor.click();
  await page.keyboard.press("ControlOrMeta+A");
  await page.keyboard.insertText("{ viewer { tenantId scopes } }");
  await page.getByRole("button", { name: "Execute query (Ctrl-Enter)" }).click();
  const result = page.locator(".result-window");
  await result.filter({ hasText: /"(data|errors)"/ }).waitFor();
  report.result = await result.innerText();

  await page.screenshot({ path: screenshotPath });

  // axe-core, evaluated through the DevTools protocol (the page's CSP
  // rightly refuses an injected inline script).
  await page.evaluate(axeSource);
  report.axe = await page.evaluate(async () => {
    const results = await window.axe.run(document, {
      resultTypes: ["violations"],
      elementRef: true,
    });
    // Herald writes the document, its head and the <main> holding a heading
    // and the element GraphiQL mounts in; everything inside that element
    // (or portalled out of it, to the end of <body>) is GraphiQL's.
    const heralds = (element) =>
      element === document.documentElement ||
      element === document.body ||
      element.closest("head") !== null ||
      element.id === "graphiql" ||
      (element.closest("main") !== null && element.closest("#graphiql") === null);
    return results.violations.map((violation) => {
      const targets = (nodes) => nodes.map((node) => node.target.join(" "));
      return {
        id: violation.id,
        impact: violation.impact,
        help: violation.help,
        herald: targets(violation.nodes.filter((node) => heralds(node.element))),
        graphiql: targets(violation.nodes.filter((node) => !heralds(node.element))),
      };
    });
  });
  report.cspViolations = await page.evaluate(() => window.__cspViolations);
} catch (error) {
  report.failure = String(error);
} finally {
  await browser.close();
}
// The report goes out on failure too: it shows what the page got.
console.log(JSON.stringify(report));
process.exitCode = report.failure === undefined ? 0 : 1;
