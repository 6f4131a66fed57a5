// The Socket.IO Admin UI (@socket.io/admin-ui 0.5, its own ui/dist build served
// by durasock -admin-ui-dir) in headless Chromium, against two durasock nodes
// of one cluster:
//
//   - two clients connect to node A and two to node B;
//   - the UI, opened on node A, logs in with the username and password;
//   - its Servers page lists both nodes (by node id), its Sockets page the four
//     sockets, those of B too;
//   - "Disconnect" on the page of a socket of node B disconnects that client
//     (reason "io server disconnect"), and the others stay connected.
//
// Chromium is the Debian package (CHROMIUM, default /usr/bin/chromium) driven
// by playwright-core; the page may reach 127.0.0.1 only.
//
// Usage: URL_A=... URL_B=... ADMIN_PASSWORD=... [SCREENSHOT=file.png] node admin-ui.mjs
import { io } from "socket.io-client";
import { chromium } from "playwright-core";
import { scenario, track, connected, once, equal, check, log } from "./lib.mjs";

const { URL_A, URL_B, NODE_A, NODE_B, ADMIN_PASSWORD, SCREENSHOT } = process.env;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

let browser;
await scenario("admin-ui", 90000, async () => {
  check(URL_A && URL_B && NODE_A && NODE_B && ADMIN_PASSWORD, "URL_A, URL_B, NODE_A, NODE_B and ADMIN_PASSWORD must be set");
  const opts = { forceNew: true, reconnection: false, timeout: 5000, transports: ["websocket"] };
  const clients = [URL_A, URL_A, URL_B, URL_B].map((u) => track(io(u, opts)));
  await Promise.all(clients.map((c) => connected(c, 10000)));
  const ids = clients.map((c) => c.id);
  log("clients", ids);

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage();
    page.on("console", (m) => { if (m.type() === "error") log("page console:", m.text()); });
    // The UI's stylesheet links point at font CDNs: nothing leaves this machine.
    await page.route("**/*", (route) => {
      const host = new URL(route.request().url()).hostname;
      return host === "127.0.0.1" || host === "localhost" ? route.continue() : route.abort();
    });
    await page.goto(`${URL_A}/admin/`, { waitUntil: "domcontentloaded" });
    await page.getByLabel("Server URL").fill(URL_A, { timeout: 15000 });
    await page.getByLabel("Username").fill("admin");
    await page.getByLabel("Password").fill(ADMIN_PASSWORD);
    await page.getByRole("button", { name: "Connect" }).click();
    await page.getByLabel("Server URL").waitFor({ state: "hidden", timeout: 15000 });
    log("logged in");

    await page.evaluate(() => { location.hash = "#/servers/"; });
    for (const id of [NODE_A, NODE_B]) {
      await page.getByText(id, { exact: true }).first().waitFor({ timeout: 15000 });
    }
    log("the Servers page lists both nodes");
    if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT.replace(/\.png$/, "-servers.png"), fullPage: true });

    await page.evaluate(() => { location.hash = "#/sockets/"; });
    for (const id of ids) {
      await page.getByText(id, { exact: true }).first().waitFor({ timeout: 15000 });
    }
    log("the Sockets page lists the sockets of both nodes");
    if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT, fullPage: true });

    const victim = clients[2]; // on node B
    const gone = once(victim, "disconnect", 15000);
    await page.evaluate((id) => { location.hash = `#/n/%2F/sockets/${id}`; }, victim.id);
    await page.getByText(victim.id, { exact: true }).first().waitFor({ timeout: 15000 });
    // The page has a "Status" row for the client and one for the socket, each
    // with its disconnect button (an icon: the icon font comes from a CDN the
    // test does not reach, so the buttons are found by their place).
    const socketStatus = page.locator("tr", { hasText: "Status" }).nth(1);
    const button = socketStatus.locator("button");
    check((await button.count()) === 1, "the socket's Status row has its disconnect button");
    await button.click({ timeout: 15000 });
    const [reason] = await gone;
    equal(reason, "io server disconnect", "reason seen by the client disconnected from the UI");
    for (const c of [clients[0], clients[1], clients[3]]) check(c.connected, `${c.id} is still connected`);
    log("disconnected from the UI:", ids[2]);
  } finally {
    await browser.close();
  }
});
