// Keeps Bramble's overview page open in headless Chromium until stdin closes (or SIGTERM):
// the "page open, event stream connected" half of bench/ui_footprint.py.
//
//   node tests/browser/hold.mjs http://127.0.0.1:PORT
//
// Prints "ready" once the page's event stream is connected.
import { chromium } from "playwright-core";

const base = process.argv[2];
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const page = await browser.newPage();
await page.goto(`${base}/#/`);
await page.waitForSelector("#live.on", { timeout: 30000 });
console.log("ready");
const stop = async () => { await browser.close(); process.exit(0); };
process.on("SIGTERM", stop);
process.stdin.on("end", stop);
process.stdin.resume();
