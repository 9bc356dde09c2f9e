// The dashboard in headless Chromium (Debian's, driven by playwright-core): log in through the
// form, watch the overview count messages sent meanwhile, log out. Run by the e2e test
// `dashboard::in_chromium_…`, which passes where weft listens (WEFT_UI, WEFT_TOKEN, ORDERS_URL),
// the browser (CHROMIUM) and where screenshots go (SHOTS). Any console error, CSP violation
// included, fails it.
"use strict";
const assert = require("node:assert/strict");
const path = require("node:path");
const { chromium } = require("playwright-core");

const { WEFT_UI: ui, WEFT_TOKEN: token, ORDERS_URL: orders, JOBS_URL: jobs, CHROMIUM, SHOTS } = process.env;

/** POSTs a JSON body to one of the flows; the answer's status. */
async function send(url, body) {
  const r = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return r.status;
}

async function main() {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run",
    ],
  });
  const problems = [];
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 480 } });
    const page = await context.newPage();
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console: ${m.text()}`);
    });
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));

    // Not logged in: the overview sends the browser to the form.
    await page.goto(`${ui}/ui/`);
    assert.equal(new URL(page.url()).pathname, "/ui/login");
    await page.fill("#token", "not-the-token");
    await Promise.all([page.waitForLoadState(), page.click("button[type=submit]")]);
    assert.match(await page.textContent(".error"), /not the admin token/);
    // A wrong token is answered 401; the browser shows the form again, which logs no error
    // of the page's own.
    const wrong = problems.findIndex((p) => p.includes("401"));
    if (wrong >= 0) problems.splice(wrong, 1);
    await page.screenshot({ path: path.join(SHOTS, "login.png") });

    await page.fill("#token", token);
    await Promise.all([page.waitForURL(`${ui}/ui/`), page.click("button[type=submit]")]);
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === "weft_session");
    assert.ok(session, JSON.stringify(cookies));
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, "Strict");
    assert.equal(await page.evaluate(() => document.cookie), "", "script cannot read the session");

    const row = (flow) => page.locator(`tr[data-flow="${flow}"]`);
    assert.equal(await row("orders").count(), 1);
    assert.equal(await row("jobs").count(), 1);
    assert.equal((await row("orders").locator(".state").textContent()).trim(), "running");
    assert.equal((await row("jobs").locator("td").nth(1).textContent()).trim(), "durable");

    // Twenty messages: the page counts them without a reload, and the sparkline rises.
    for (let i = 0; i < 20; i++) assert.equal(await send(orders, { n: i }), 200);
    await page.waitForFunction(
      () => document.querySelector('tr[data-flow="orders"] .total.received')?.textContent === "20",
      null,
      { timeout: 10000 },
    );
    await page.waitForFunction(
      () => {
        const points = document.querySelector('tr[data-flow="orders"] polyline.received')?.getAttribute("points") ?? "";
        return points.split(" ").some((p) => Number(p.split(",")[1]) < 12);
      },
      null,
      { timeout: 10000 },
    );
    assert.equal(await row("orders").locator(".total.delivered").textContent(), "20");
    assert.match(await page.textContent("#status"), /^updated /);
    await page.screenshot({ path: path.join(SHOTS, "overview.png"), fullPage: true });

    // Pause and resume from the overview, after saying yes to the question (each question
    // kept, to check what it said).
    const questions = [];
    page.on("dialog", (dialog) => {
      questions.push(dialog.message());
      dialog.accept();
    });
    // A function, not a string: the page's CSP forbids evaluating strings.
    const inState = ([flow, state]) =>
      document.querySelector(`tr[data-flow="${flow}"] .state`)?.textContent === state;
    await row("orders").locator("button", { hasText: "Pause" }).click();
    await page.waitForFunction(inState, ["orders", "paused"], { timeout: 10000 });
    assert.equal(await send(orders, { paused: true }), 503);
    await row("orders").locator("button", { hasText: "Resume" }).click();
    await page.waitForFunction(inState, ["orders", "running"], { timeout: 10000 });
    assert.equal(await send(orders, { resumed: true }), 200);

    // A durable message whose delivery is refused becomes a dead letter; the page finds it,
    // shows it, and replays it edited.
    assert.equal(await send(jobs, { job: 1, fixed: false }), 202);
    for (let tries = 0; ; tries++) {
      await page.goto(`${ui}/ui/dlq?flow=jobs`);
      if ((await page.locator("table.dlq tbody tr[data-id]").count()) === 1) break;
      assert.ok(tries < 50, "the dead letter shows within 10 s");
      await page.waitForTimeout(200);
    }
    assert.equal(await page.textContent("#matching"), "1");
    await page.screenshot({ path: path.join(SHOTS, "dead_letters.png"), fullPage: true });
    await Promise.all([page.waitForURL(/\/ui\/dlq\/jobs\//), page.click("table.dlq tbody a")]);
    assert.deepEqual(JSON.parse(await page.textContent("#message")), { job: 1, fixed: false });
    assert.match(await page.textContent("table.history"), /dead_lettered/);
    await page.click("details.edit summary");
    await page.screenshot({ path: path.join(SHOTS, "dead_letter.png"), fullPage: true });
    await page.fill("#edited", "not json");
    await page.click("details.edit button");
    assert.match(await page.textContent("#status"), /not JSON/);
    await page.fill("#edited", JSON.stringify({ job: 1, fixed: true }));
    await Promise.all([page.waitForURL(`${ui}/ui/dlq?flow=jobs`), page.click("details.edit button")]);
    assert.equal(await page.textContent("#matching"), "0");

    // The edited one is delivered before anything else is sent: the receiver answers in turn.
    const delivered = async (n) => {
      for (let tries = 0; ; tries++) {
        const count = await page.evaluate(
          async () => (await (await fetch("/api/v1/flows/jobs")).json()).counters.delivered,
        );
        if (count === n) return;
        assert.ok(tries < 200, `${n} delivered within 20 s (${count})`);
        await page.waitForTimeout(100);
      }
    };
    await delivered(1);

    // Fifty refused: "Replay all matching" says 50 first, then a job replays them in the
    // background, its progress on the page, and the list drains.
    for (let i = 0; i < 50; i++) assert.equal(await send(jobs, { bulk: i }), 202);
    const listed = async (n) => {
      for (let tries = 0; ; tries++) {
        await page.goto(`${ui}/ui/dlq?flow=jobs`);
        // The count and the rows are two reads: both must have seen the last write.
        const rows = await page.locator("table.dlq tbody tr[data-id]").count();
        if ((await page.textContent("#matching")) === String(n) && rows === Math.min(n, 50)) return;
        assert.ok(tries < 100, `${n} dead letters listed within 20 s`);
        await page.waitForTimeout(200);
      }
    };
    await listed(50);
    assert.equal(await page.locator("table.dlq tbody tr[data-id]").count(), 50);
    // One of them found by its id.
    const one = await page.locator("table.dlq tbody tr[data-id]").first().getAttribute("data-id");
    await page.goto(`${ui}/ui/messages?id=${one}`);
    assert.equal(await page.locator('tr[data-place="dead_letter"]').count(), 1);
    await page.screenshot({ path: path.join(SHOTS, "messages.png"), fullPage: true });
    await page.goto(`${ui}/ui/dlq?flow=jobs`);
    await Promise.all([
      page.waitForEvent("load"),
      page.click("button:text('Replay all matching')"),
    ]);
    assert.match(questions.at(-1), /^Replay 50 dead letters/);
    await page.waitForFunction(
      () => /50 of 50/.test(document.querySelector("div.job")?.textContent ?? "")
        && document.querySelector("div.job .job-state")?.textContent === "done",
      null,
      { timeout: 20000 },
    );
    await page.screenshot({ path: path.join(SHOTS, "bulk_replay.png"), fullPage: true });
    await listed(0);
    await delivered(51);

    // Two more refused, picked by their boxes, replayed one by one.
    for (let i = 0; i < 2; i++) assert.equal(await send(jobs, { picked: i }), 202);
    await listed(2);
    const replaySelected = page.locator("button[data-picked='/api/v1/dlq/replay']");
    assert.equal(await replaySelected.isDisabled(), true);
    await page.check("#pick-all");
    assert.equal((await replaySelected.textContent()).trim(), "Replay selected (2)");
    await Promise.all([page.waitForEvent("load"), replaySelected.click()]);
    assert.match(questions.at(-1), /^Replay the 2 selected/);
    await listed(0);

    // The flow's page: its graph, each box with its counts.
    await page.goto(`${ui}/ui/flows/orders`);
    assert.equal(await page.locator("svg.graph g.box").count(), 4);
    assert.match(await page.textContent('g[data-component="output.http_client"]'), /sent \d+/);
    await page.screenshot({ path: path.join(SHOTS, "flow.png"), fullPage: true });

    // The tap of a flow: every stage's copy, a mark for a filtered message, at most the rows
    // asked for, and a paused view that counts what it does not show.
    await page.goto(`${ui}/ui/flows/orders/tap`);
    await page.fill('input[name="keep"]', "5");
    await page.click("#tap-form button[type=submit]");
    await page.waitForFunction(() => document.getElementById("tap-state").textContent === "Listening.");
    assert.equal(await send(orders, { tapped: 1 }), 200);
    await page.waitForFunction(() => document.querySelectorAll("#tap-rows tr").length === 4);
    const stages = await page.$$eval("#tap-rows td:nth-child(2)", (cells) => cells.map((c) => c.textContent));
    assert.deepEqual(stages, ["output", "pipeline[1].map", "pipeline[0].filter", "input"]);
    assert.ok((await send(orders, { drop: true })) < 300);
    await page.waitForSelector("#tap-rows tr.filtered");
    assert.equal(await page.locator("#tap-rows tr").count(), 5, "the rows kept are capped");
    // The receiver refuses the next one: the tap marks it failed, with why.
    assert.equal(await send(orders, { refused: 1 }), 502);
    await page.waitForSelector("#tap-rows tr.failed");
    assert.match(await page.textContent("#tap-rows tr.failed"), /failed: .*500/);
    await page.screenshot({ path: path.join(SHOTS, "tap.png"), fullPage: true });
    await page.click("#tap-pause");
    assert.equal(await send(orders, { unseen: 1 }), 200);
    await page.waitForFunction(() => Number(document.getElementById("tap-hidden").textContent) >= 3);
    assert.equal(await page.locator("#tap-rows tr").count(), 5);
    assert.equal(await page.locator("#tap-rows tr.failed").count(), 1);

    // The config page checks pasted YAML and says where it is wrong.
    await page.goto(`${ui}/ui/config`);
    await page.fill("#check-text", "flows:\n  x:\n    input: { stdin: {} }\n    output: { dropp: {} }\n");
    await page.click("#check-form button[type=submit]");
    await page.waitForSelector("#check-result:not([hidden])");
    assert.match(await page.textContent("#check-result"), /^check\.yaml:4:/);
    await page.screenshot({ path: path.join(SHOTS, "config.png"), fullPage: true });

    // The session cookie also opens the API, for the page's own scripts.
    const api = await page.evaluate(async () => (await fetch("/api/v1/flows")).status);
    assert.equal(api, 200);

    await Promise.all([page.waitForURL(`${ui}/ui/login`), page.click(".logout button")]);
    await page.goto(`${ui}/ui/`);
    assert.equal(new URL(page.url()).pathname, "/ui/login");
  } finally {
    await browser.close();
  }
  assert.deepEqual(problems, [], "no console errors or CSP violations");
  console.log("dashboard: ok");
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
