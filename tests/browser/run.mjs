// Browser tests: Debian's chromium, driven by playwright-core, against a real
// kindercam daemon on loopback. The daemon is started here (KINDERCAM_BIN, or
// target/debug/kindercam) on port 0 and serves its embedded pages
// (KINDERCAM_WEB_DIR=web serves them from disk instead, for page work).
//
// Access control is on, as in production: every browser context logs in through
// the login page, parents with the viewer code, staff with the staff code, the
// director with the admin code, and families with the codes the director's page
// hands out. A second camera ("patio") runs beside "camera", so that a family's
// rooms are a real choice.
//
//   1. the staff page broadcasts the fake camera; a viewer shows changing frames
//   2. chat between two browsers: order, own messages, markup stays text, scrolling
//   3. a teacher pauses the room from the broadcaster page: the family's page
//      says "paused" instead of the picture, another teacher's page shows the
//      pause (and keeps the picture), and the button on that teacher's picture
//      resumes it, bringing the family's picture back
//   4. the viewer recovers from a Wi-Fi drop and a daemon restart, and says
//      "offline" when the broadcast stops
//   5. a phone whose clock is an hour fast, joining then, is sent the last picture
//      and shows its real age: counted from the capture time, by the server's clock
//   6. es-CO gets Spanish, en-US English, and the toggle switches and remembers
//   7. the login page in both languages, its errors, logout, and a dead session
//   8. moderation: staff delete a parent's message and mute the parent
//   9. a parent sees no broadcast navigation and gets 403 at /camera
//  10. the director reaches /admin from the bar, adds a family with clicks and
//      gets its invite: the code, the login link with #code=, a QR image; a bad
//      room name is refused beside its field; printing shows only the invite
//  11. the director sets a room's opening hours in /admin, is corrected on a
//      mistake, and opens the room again
//  12. in Spanish and in English: a family logs in through its invite link
//      (typing only a name), sees the live picture with only its room in the
//      picker; the director sees it watching, revokes it in the page, and the
//      family's page says it was logged out within a few seconds
//  13. the device limit: a family with max_devices 1 gets the refusal on its
//      second device, in English and in Spanish, while the first keeps
//      watching; once the first leaves, "try again" brings the picture
//  14. the director draws a privacy mask over the live picture in /admin; a
//      family of that room sees the area black in every picture
//  15. the PHP prototype's unchanged chat page (tests/browser/prototype/,
//      served from a second origin that --allowed-origin lets in) at
//      /chat/server.php: two pages exchange messages
//  16. the prototype's camara page sends its canvas.toDataURL() (PNG) to
//      /chat/serverCam.php; its visorCamara page shows the changing picture
//  17. a PNG canvas sent by a kindercam page to /upload/NAME reaches
//      kindercam's viewer as changing JPEG frames
//  18. the frame-size logic (web/quality.js) on made-up timings: a late or
//      starved link asks for small frames, a timely one for full size after
//      30 s, blips change nothing, a relapse waits twice as long
//  19. a viewer whose link turns late (its messages delayed in the page)
//      switches to ?size=small by itself (half-size picture, the server making
//      small frames, the note shown), back to full once timely, without the
//      picture leaving the screen; a tap on the note keeps full size
//  20. an <img> of /stream.mjpg (MJPEG over HTTP) on a logged-in parent's
//      page shows the camera, its pixels changing
//  21. screenshots for README: login.png, viewer-phone.png,
//      viewer-desktop.png, broadcaster.png, admin.png (into docs/ with
//      KINDERCAM_SCREENSHOTS=docs)
//
// Every wait is on a condition with a timeout. The last line is
// "browser: N passed, M failed"; the exit code is non-zero on any failure,
// including a missing browser.

import { spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '../..');
const BIN = path.resolve(ROOT, process.env.KINDERCAM_BIN || 'target/debug/kindercam');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
/** Pages from disk instead of the embedded ones, for page work without a rebuild. */
const WEB_DIR = process.env.KINDERCAM_WEB_DIR;
// Screenshots refresh README's pictures only when asked
// (KINDERCAM_SCREENSHOTS=docs); otherwise they are taken and checked in the
// run's own directory, so running the tests leaves the tree clean.
const SCREENSHOTS_TO_DOCS = process.env.KINDERCAM_SCREENSHOTS === 'docs';
/** Longest wait for any one condition. */
const WAIT_MS = 20_000;
/** The whole run, in case something hangs outside a wait. */
const RUN_LIMIT_MS = 300_000;
const TESTS = 21;
/** The stream the prototype's pages use (--prototype-stream). */
const PROTOTYPE_STREAM = 'sala-php';
const VIEWER_CODE = 'familias-2026';
const STAFF_CODE = 'profes-2026';
const ADMIN_CODE = 'direccion-2026';
const CODES = { parent: VIEWER_CODE, staff: STAFF_CODE, admin: ADMIN_CODE };
/** The second camera, a room a family may or may not have. */
const SECOND_ROOM = 'patio';
/**
 * A Basic-auth challenge to a page's script would pop up the browser's own
 * password dialog over the page (headless, the request just hangs). With these
 * wrong credentials the browser answers it instead, gets a 401, and watchPage
 * reports that 401.
 */
const CHALLENGED = { username: 'password-dialog', password: 'must-never-show' };

const work = mkdtempSync(path.join(tmpdir(), 'kindercam-browser-'));
const DOCS = SCREENSHOTS_TO_DOCS ? path.join(ROOT, 'docs') : path.join(work, 'screenshots');
const logPath = path.join(work, 'daemon.log');
const log = createWriteStream(logPath, { flags: 'a' });

// ---- the prototype's pages, from another origin ----------------------------

/**
 * Serves tests/browser/prototype/ on loopback port 0, as the daycare's old
 * Apache served the PHP prototype's pages: another origin than kindercam's.
 */
async function servePrototype() {
  const dir = path.join(HERE, 'prototype');
  const server = createServer((req, res) => {
    const name = path.basename(new URL(req.url, 'http://x').pathname);
    const file = path.join(dir, name);
    if (!existsSync(file)) {
      // The browser's own /favicon.ico request is no failure of the pages.
      res.writeHead(name === 'favicon.ico' ? 204 : 404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(readFileSync(file));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}
const prototypeSite = await servePrototype();

/** A loopback port free right now, for a listener whose origin must be known before it starts. */
async function freePort() {
  const probe = createServer();
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address();
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

// ---- the daemon ------------------------------------------------------------

class Daemon {
  constructor() {
    this.child = null;
    this.http = null;
    this.ws = null;
  }

  get base() {
    return `http://${this.http}`;
  }

  /** Starts kindercam on loopback port 0, or on the given addresses (a restart). */
  async start(http = '127.0.0.1:0', ws = '127.0.0.1:0', state = 'state') {
    if (!existsSync(BIN)) throw new Error(`kindercam binary not found at ${BIN} (set KINDERCAM_BIN)`);
    // An allowlist replaces the default (the pages' own origin), so kindercam's
    // own origin is listed beside the prototype's: its port is chosen here.
    if (http.endsWith(':0')) http = `127.0.0.1:${await freePort()}`;
    const ownOrigin = `http://${http}`;
    const args = ['--http-listen', http, '--ws-listen', ws, '--source', 'test-pattern', '--source', `${SECOND_ROOM}=test-pattern`,
      '--state-dir', path.join(work, state), '--auth', 'on', '--viewer-code', VIEWER_CODE, '--staff-code', STAFF_CODE,
      '--admin-code', ADMIN_CODE, '--allowed-origin', ownOrigin, '--allowed-origin', prototypeSite.origin, '--prototype-stream', PROTOTYPE_STREAM];
    if (WEB_DIR) args.push('--web-dir', path.resolve(ROOT, WEB_DIR));
    const child = spawn(BIN, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KINDERCAM_LOG: 'info' } });
    this.child = child;
    child.exited = new Promise((resolve) => child.once('exit', resolve));
    child.stderr.pipe(log, { end: false });
    const ready = await new Promise((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error('kindercam did not start within 20 s')), WAIT_MS);
      child.stdout.on('data', (chunk) => {
        log.write(chunk);
        out += chunk;
        const m = out.match(/open http:\/\/(\S+?)\/ in a browser \(WebSocket on (\S+?)\)/);
        if (m) {
          clearTimeout(timer);
          resolve({ http: m[1], ws: m[2] });
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`kindercam exited with ${code} at start; log: ${logPath}`));
      });
    });
    this.http = ready.http;
    this.ws = ready.ws;
    return ready;
  }

  async kill(signal = 'SIGKILL') {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    await child.exited;
  }

  async restart() {
    await this.kill();
    await this.start(this.http, this.ws);
  }
}

const daemon = new Daemon();

// ---- helpers ------------------------------------------------------------------

function assert(condition, message) {
  if (!condition) throw new Error(message);
}

function equal(actual, expected, what) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  assert(a === e, `${what}: expected ${e}, got ${a}`);
}

/** Waits until `fn(arg)` is truthy in the page; the error says what was awaited. */
async function until(page, what, fn, arg) {
  try {
    return await (await page.waitForFunction(fn, arg, { timeout: WAIT_MS, polling: 100 })).jsonValue();
  } catch (error) {
    const state = await page
      .evaluate(() =>
        ['[role=status]', '#mask-status', '#mask-error', '#chat-error', '#cam-error', '#chat-conn', '#login-error', '#login-note']
          .map((q) => document.querySelector(q)?.textContent)
          .concat([...document.querySelectorAll('#messages li')].slice(-8).map((li) => li.textContent.slice(0, 40)))
          .filter(Boolean)
          .join(' | '),
      )
      .catch(() => '?');
    throw new Error(`timed out waiting for ${what} (page says: ${JSON.stringify(state)}): ${error.message.split('\n')[0]}`);
  }
}

/**
 * Waits until the viewer is live and shows a picture whose pixels (read back
 * through a canvas) differ from the hash `previous`; returns { hash, src }.
 */
/**
 * Waits until <img id> shows a picture whose pixels differ from the hash
 * `previous` (the prototype's viewer, which has no live state); returns
 * { hash, size }.
 */
async function nextImg(page, id, previous, what) {
  return until(
    page,
    what,
    ([id, prev]) => {
      const img = document.getElementById(id);
      if (!img || !img.complete || !img.naturalWidth) return null;
      const canvas = document.createElement('canvas');
      canvas.width = img.naturalWidth;
      canvas.height = img.naturalHeight;
      const g = canvas.getContext('2d');
      g.drawImage(img, 0, 0);
      const data = g.getImageData(0, 0, canvas.width, canvas.height).data;
      let h = 2166136261;
      for (let i = 0; i < data.length; i += 3) h = Math.imul(h ^ data[i], 16777619);
      const hash = `${canvas.width}x${canvas.height}:${(h >>> 0).toString(16)}`;
      return hash !== prev ? { hash, size: [canvas.width, canvas.height], jpeg: img.src.startsWith('data:image/jpeg;base64,') } : null;
    },
    [id, previous],
  );
}

async function nextPicture(page, previous, what) {
  return until(
    page,
    what,
    (prev) => {
      const img = document.getElementById('picture');
      if (document.getElementById('screen').dataset.state !== 'live') return null;
      if (!img || img.hidden || !img.complete || !img.naturalWidth) return null;
      const canvas = document.createElement('canvas');
      canvas.width = img.naturalWidth;
      canvas.height = img.naturalHeight;
      const g = canvas.getContext('2d');
      g.drawImage(img, 0, 0);
      const data = g.getImageData(0, 0, canvas.width, canvas.height).data;
      let h = 2166136261;
      for (let i = 0; i < data.length; i += 3) h = Math.imul(h ^ data[i], 16777619);
      const hash = `${canvas.width}x${canvas.height}:${(h >>> 0).toString(16)}`;
      // The size is read here, in the same task as the hash: by the next
      // evaluate a newer frame may be loading, and a loading <img> reports 0x0.
      return hash !== prev ? { hash, src: img.src, size: [canvas.width, canvas.height] } : null;
    },
    previous,
  );
}

// Pages must never throw, the CSP must never have to block anything, and no
// request fails unless the test expects it (page.expectHttp).
const problems = [];
function watchPage(page, label) {
  const expected = [];
  page.expectHttp = (status, pathname) => expected.push({ status, pathname });
  page.on('pageerror', (error) => problems.push(`${label}: uncaught ${error.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && /Content Security Policy|Refused to/i.test(msg.text())) {
      problems.push(`${label}: ${msg.text()}`);
    }
  });
  page.on('response', (reply) => {
    const { pathname } = new URL(reply.url());
    if (reply.status() >= 400 && !expected.some((e) => e.status === reply.status() && e.pathname === pathname)) {
      problems.push(`${label}: HTTP ${reply.status()} for ${reply.url()}`);
    }
  });
  // No alert, confirm or prompt: moderation confirms inside the page.
  page.on('dialog', (dialog) => {
    problems.push(`${label}: a ${dialog.type()} dialog: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  return page;
}

/**
 * Reads the picture in <img id> through a canvas (in the page): a hash of its
 * pixels, the brightest pixel inside `rect` (less a margin, since the server
 * rounds masks outward to JPEG blocks) and the mean brightness of the whole.
 * Null until the picture differs from the hash `prev`, or, with `dark`, until
 * the inside is black.
 */
function probeMask({ id, rect, prev, dark }) {
  const img = document.getElementById(id);
  if (id === 'picture' && document.getElementById('screen').dataset.state !== 'live') return null;
  if (!img || img.hidden || !img.complete || !img.naturalWidth) return null;
  const canvas = document.createElement('canvas');
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const g = canvas.getContext('2d');
  g.drawImage(img, 0, 0);
  const all = g.getImageData(0, 0, canvas.width, canvas.height).data;
  let h = 2166136261;
  let sum = 0;
  for (let i = 0; i < all.length; i += 4) {
    h = Math.imul(h ^ all[i], 16777619);
    sum += Math.max(all[i], all[i + 1], all[i + 2]);
  }
  const hash = (h >>> 0).toString(16);
  if (hash === prev) return null;
  const m = 0.02;
  const x0 = Math.floor((rect.x + m) * canvas.width);
  const y0 = Math.floor((rect.y + m) * canvas.height);
  const x1 = Math.floor((rect.x + rect.w - m) * canvas.width);
  const y1 = Math.floor((rect.y + rect.h - m) * canvas.height);
  const d = g.getImageData(x0, y0, x1 - x0, y1 - y0).data;
  let inside = 0;
  for (let i = 0; i < d.length; i += 4) inside = Math.max(inside, d[i], d[i + 1], d[i + 2]);
  if (dark && inside > 8) return null;
  return { hash, inside, whole: sum / (all.length / 4) };
}

/** The path (and query) a page is on. */
function where(page) {
  const url = new URL(page.url());
  return url.pathname + url.search;
}

/**
 * Logs in through the login page with the form a person would use, and waits
 * for the page the server sends us to.
 */
async function logIn(page, name, code, landing = (u) => u.pathname === '/') {
  if (new URL(page.url()).pathname !== '/login') await page.goto(`${daemon.base}/login`);
  await page.fill('#name', name);
  await page.fill('#code', code);
  await Promise.all([page.waitForURL(landing, { timeout: WAIT_MS }), page.click('#login-submit')]);
}

/**
 * Adds a family in the director's page the way a person does: the name, the
 * rooms ticked (only `rooms`), the device limit, then "add". Waits for its
 * invite and answers what it shows.
 */
async function addFamily(admin, name, { rooms = ['camera'], max = null } = {}) {
  await until(admin, 'the room checkboxes', () => document.querySelectorAll('#room-choices input').length > 0);
  await admin.fill('#family-name', name);
  for (const box of await admin.locator('#room-choices input').all()) {
    await box.setChecked(rooms.includes(await box.inputValue()));
  }
  if (max !== null) await admin.fill('#family-max', String(max));
  await admin.click('#family-submit');
  await until(
    admin,
    `the invite of ${name}`,
    (n) => !document.getElementById('invite').hidden && document.getElementById('invite-family').textContent === n,
    name,
  );
  return { code: await admin.textContent('#invite-code'), link: await admin.textContent('#invite-link') };
}

/** A family's card in the director's list. */
function familyCard(admin, name) {
  return admin.locator('#family-list li.family').filter({ has: admin.locator('.family-name', { hasText: name }) });
}

function noProblems() {
  const found = problems.splice(0);
  assert(found.length === 0, `page errors:\n  ${found.join('\n  ')}`);
}

const results = [];
async function test(name, fn) {
  const started = Date.now();
  try {
    await fn();
    noProblems();
    results.push(true);
    console.log(`ok ${results.length} - ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    problems.length = 0;
    results.push(false);
    console.log(`not ok ${results.length} - ${name}\n  ${String(error.stack || error).split('\n').slice(0, 4).join('\n  ')}`);
  }
}

function finish() {
  const passed = results.filter(Boolean).length;
  const failed = TESTS - passed;
  if (failed) console.log(`daemon log: ${logPath}`);
  console.log(`browser: ${passed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

// ---- the tests --------------------------------------------------------------------

async function main() {
  // Imported here so that missing node modules count as failed tests too.
  const { chromium } = await import('playwright-core');
  if (!existsSync(CHROMIUM)) throw new Error(`no browser at ${CHROMIUM}: apt-get install chromium chromium-driver`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-quic',
      '--use-fake-device-for-media-stream',
      '--use-fake-ui-for-media-stream',
    ],
  });
  /**
   * A new browser (context) that logs in as `as` ("parent", "staff" or
   * "admin", or null for nobody) under `name`, then opens `url`.
   */
  const open = async (label, url, { as = 'parent', name = label, ...options } = {}) => {
    const context = await browser.newContext({ locale: 'es-CO', viewport: { width: 1280, height: 800 }, httpCredentials: CHALLENGED, ...options });
    const page = watchPage(await context.newPage(), label);
    page.person = { as, name };
    if (as) await logIn(page, name, CODES[as]);
    if (!as || where(page) !== url) await page.goto(daemon.base + url);
    return page;
  };

  /**
   * A family's device: a new browser that opens the invite's link, checks the
   * code is filled in (and gone from the address), types only the name, and
   * lands on the camera page.
   */
  const familyDevice = async (label, invite, name, { locale = 'es-CO', ...options } = {}) => {
    const context = await browser.newContext({ locale, viewport: { width: 1280, height: 800 }, httpCredentials: CHALLENGED, ...options });
    const page = watchPage(await context.newPage(), label);
    page.person = { as: 'family', name };
    await page.goto(invite.link);
    equal(await page.inputValue('#code'), invite.code, `${label}: the code filled in from the link`);
    equal(new URL(page.url()).hash, '', `${label}: the code left in the address bar`);
    await page.fill('#name', name);
    await Promise.all([page.waitForURL((u) => u.pathname === '/', { timeout: WAIT_MS }), page.click('#login-submit')]);
    return page;
  };

  let staff;
  let viewer;
  let other;

  try {
    await daemon.start();
    console.log(`# kindercam at ${daemon.base} (WebSocket ${daemon.ws}); chromium ${browser.version()}`);

    await test('broadcaster page sends the fake camera and a viewer shows changing frames', async () => {
      staff = await open('staff', '/camera', { as: 'staff', name: 'Profe Ana' });
      equal(await staff.inputValue('input[name="stream"]'), 'aula', 'default stream name');
      // The bar is filled once /config.json has answered.
      await until(staff, 'the account in the bar', () => document.getElementById('account-name').textContent !== '');
      equal(await staff.textContent('#account-name'), 'Profe Ana', 'who is logged in');
      assert(await staff.isVisible('#account-role'), 'staff tag in the bar');
      await staff.fill('input[name="stream"]', 'aula');
      await staff.click('#start');
      await until(staff, 'the broadcaster to be live', () => document.getElementById('screen').dataset.state === 'live');
      await until(staff, 'two acked frames', () => Number(document.getElementById('frames-sent').textContent) >= 2);
      assert(/\d.*KB/.test(await staff.textContent('#frame-size')), 'upload size shown from the acks');

      viewer = await open('viewer', '/?stream=aula', { name: 'Alicia' });
      const first = await nextPicture(viewer, null, 'a first frame');
      equal(first.size, [640, 480], 'picture size (fake camera at the chosen 640x480)');
      assert(first.src.startsWith('blob:'), `binary frames shown through blob URLs, got ${first.src.slice(0, 30)}`);
      await nextPicture(viewer, first.hash, 'the picture to change');
      await until(
        viewer,
        'the blob URL of the replaced frame to be revoked',
        (url) =>
          new Promise((resolve) => {
            const probe = new Image();
            probe.onload = () => resolve(false);
            probe.onerror = () => resolve(true);
            probe.src = url;
          }),
        first.src,
      );
      await until(staff, 'the broadcaster to count its viewer', () => Number(document.getElementById('viewers').textContent) >= 1);

      // Two streams now exist (camera and aula): the picker appears.
      await until(viewer, 'the stream picker', () => !document.getElementById('picker').hidden);
      const streams = await viewer.$$eval('#stream-select option', (options) => options.map((o) => o.value));
      assert(streams.includes('aula') && streams.includes('camera'), `picker lists both streams: ${streams}`);
      equal(await viewer.inputValue('#stream-select'), 'aula', 'picker shows the watched stream');

      const [download] = await Promise.all([viewer.waitForEvent('download', { timeout: WAIT_MS }), viewer.click('#snapshot')]);
      assert(/^kindercam-aula-\d{8}-\d{6}\.jpg$/.test(download.suggestedFilename()), `snapshot name ${download.suggestedFilename()}`);
      const jpeg = readFileSync(await download.path());
      assert(jpeg[0] === 0xff && jpeg[1] === 0xd8 && jpeg.length > 1000, 'snapshot is a JPEG');

      // A second device broadcasting to the same stream is told so.
      const intruder = await open('intruder', '/camera', { as: 'staff' });
      await intruder.click('#start');
      const error = await until(intruder, 'the busy error', () => {
        const box = document.getElementById('cam-error');
        return !box.hidden && box.textContent;
      });
      assert(/Otro dispositivo ya está transmitiendo a «aula»/.test(error), `busy error text: ${error}`);
      equal(await intruder.textContent('#start'), 'Empezar a transmitir', 'refused broadcaster is stopped');
      assert(await intruder.evaluate(() => document.getElementById('preview').srcObject === null), 'its camera is off');
      await intruder.context().close();
    });

    await test('chat goes both ways in order, own messages set apart, markup shown as text', async () => {
      other = await open('other', '/?stream=aula', { name: 'Beto' });
      for (const page of [viewer, other]) {
        await until(page, 'the chat to connect', () => !document.getElementById('chat-send').disabled);
        // The session's name, shown and not editable: the server posts under it anyway.
        equal(await page.textContent('#chat-as-name'), page.person.name, 'name the chat writes as');
        assert(!(await page.isVisible('#chat-name')), 'no name field with a session');
      }
      const sent = ['uno', '<b>negrita</b>', '<script>window.__pwned = 1</script>', 'dos'];
      for (const text of sent) {
        await viewer.fill('#chat-message', text);
        await viewer.press('#chat-message', 'Enter');
      }
      await other.fill('#chat-message', 'hola Alicia');
      await other.click('#chat-send');
      const expected = [...sent, 'hola Alicia'];
      for (const page of [viewer, other]) {
        await until(page, 'all five messages', (n) => document.querySelectorAll('#messages .msg').length >= n, expected.length);
        const texts = await page.$$eval('#messages .msg-text', (els) => els.map((e) => e.textContent));
        equal(texts.slice(-expected.length), expected, 'messages in order');
        equal(await page.$$eval('#messages b, #messages script', (els) => els.length), 0, 'elements made from chat text');
        equal(await page.evaluate(() => window.__pwned), undefined, 'script from chat ran');
        assert(await page.isVisible('text=<script>window.__pwned = 1</script>'), '<script> shown as visible text');
      }
      const own = (page) => page.$$eval('#messages .msg', (els) => els.slice(-5).map((e) => e.classList.contains('own')));
      equal(await own(viewer), [true, true, true, true, false], "Alicia's own messages");
      equal(await own(other), [false, false, false, false, true], "Beto's own messages");
      // Arrivals are announced once they have stayed a second, at most every two.
      await until(viewer, 'the online count in Spanish', () => /2 personas en línea/.test(document.getElementById('chat-online').textContent));

      // Reading older messages is not interrupted by new ones. Long messages
      // fill the list quickly (the server allows a burst of five, then one a second).
      for (let i = 1; i <= 3; i++) {
        await other.fill('#chat-message', `mensaje largo ${i}: ${'bla '.repeat(150)}`);
        await other.press('#chat-message', 'Enter');
      }
      await until(viewer, 'the long messages', () => [...document.querySelectorAll('.msg-text')].some((e) => e.textContent.startsWith('mensaje largo 3')));
      await until(viewer, 'a list taller than its box', () => {
        const l = document.getElementById('messages');
        return l.scrollHeight > l.clientHeight * 1.5;
      });
      await until(viewer, 'the list to be at the bottom', () => {
        const l = document.getElementById('messages');
        return l.scrollHeight - l.scrollTop - l.clientHeight < 48;
      });
      await viewer.$eval('#messages', (l) => {
        l.scrollTop = 0;
      });
      await other.fill('#chat-message', 'uno más');
      await other.press('#chat-message', 'Enter');
      await until(viewer, 'the "new messages" button', () => !document.getElementById('new-messages').hidden);
      equal(await viewer.$eval('#messages', (l) => l.scrollTop), 0, 'scroll position of a reader of older messages');
      await viewer.click('#new-messages');
      await until(viewer, 'the jump to the newest message', () => {
        const l = document.getElementById('messages');
        return l.scrollHeight - l.scrollTop - l.clientHeight < 48 && document.getElementById('new-messages').hidden;
      });
    });

    await test('a teacher pauses the room from the broadcaster page, the family page says paused, and it resumes', async () => {
      const panelState = (page) => page.evaluate(() => {
        const panel = document.getElementById('pause-panel');
        return panel.hidden ? null : { state: panel.dataset.state, text: panel.querySelector('.pause-state').textContent };
      });
      await until(staff, 'the pause button, families watching', () => document.getElementById('pause-panel').dataset.state === 'open');
      equal(await staff.textContent('#pause-panel .pause-toggle'), 'Pausar', 'the button says pause');
      // Another teacher on the viewer page sees the same room's pause.
      const teacher = await open('teacher', '/?stream=aula', { as: 'staff', name: 'Profe Luis' });
      await until(teacher, 'the teacher\'s pause panel', () => document.getElementById('pause-panel').dataset.state === 'open');
      assert((await panelState(viewer)) === null, 'no pause button for a parent');

      await staff.selectOption('#pause-panel select', '5');
      await staff.click('#pause-panel .pause-toggle');
      const notice = await until(viewer, 'the family page to say paused', () => {
        const screen = document.getElementById('screen');
        return screen.dataset.state === 'paused' && document.getElementById('picture').hidden
          && document.getElementById('placeholder-text').textContent;
      });
      assert(/El personal pausó la cámara un momento\. Vuelve a las \d{1,2}:\d{2}/.test(notice), `family notice: ${notice}`);
      equal(await viewer.textContent('#stage-state'), 'En pausa', 'the badge');
      const paused = await until(staff, 'the broadcaster page to show the pause', () => {
        const panel = document.getElementById('pause-panel');
        return panel.dataset.state === 'paused' && panel.querySelector('.pause-state').textContent;
      });
      assert(/En pausa para las familias hasta las .*quedan 5 min/.test(paused), `staff panel: ${paused}`);
      equal(await staff.textContent('#pause-panel .pause-toggle'), 'Reanudar ahora', 'the button resumes now');
      await until(teacher, 'the other teacher to learn of the pause', () => document.getElementById('pause-panel').dataset.state === 'paused');
      assert(/Profe Ana/.test(await teacher.textContent('#pause-panel .pause-by')), 'who paused it');
      // Staff keep the picture while families wait.
      const teacherPicture = await nextPicture(teacher, null, 'a frame for the teacher while paused');
      await nextPicture(teacher, teacherPicture.hash, 'frames going on for the teacher');

      // The large button on the teacher's picture says so too, and resumes it.
      equal(await teacher.textContent('#screen .stage-pause'), 'Reanudar · en pausa, quedan 5 min', 'the button on the picture');
      equal(await teacher.evaluate(() => document.getElementById('screen').dataset.gate), 'paused', 'the picture marked paused');
      await teacher.click('#screen .stage-pause');
      await until(viewer, 'the family picture to come back', () => document.getElementById('screen').dataset.state === 'live'
        && !document.getElementById('picture').hidden);
      await until(staff, 'the broadcaster page to show it resumed', () => document.getElementById('pause-panel').dataset.state === 'open');
      await until(teacher, 'the button on the picture to offer a pause again', () =>
        document.querySelector('#screen .stage-pause')?.textContent === 'Pausar 10 min');
      await teacher.context().close();
    });

    await test('viewer recovers from a Wi-Fi drop and a daemon restart, and shows offline when the broadcast stops', async () => {
      // A Wi-Fi drop: the session is intact, so picture and chat come back by themselves.
      const before = (await nextPicture(viewer, null, 'a live picture before the Wi-Fi drop')).hash;
      await viewer.context().setOffline(true);
      await until(viewer, 'the reconnecting state', () => document.getElementById('screen').dataset.state === 'reconnecting');
      equal(await viewer.textContent('#stage-state'), 'Reconectando…', 'indicator text');
      await until(viewer, 'the chat to notice', () => document.getElementById('chat-send').disabled);
      await viewer.context().setOffline(false);
      const back = (await nextPicture(viewer, before, 'a new live picture after the Wi-Fi drop')).hash;
      await until(viewer, 'the chat to reconnect', () => !document.getElementById('chat-send').disabled);

      // A daemon restart.
      await daemon.kill();
      await until(viewer, 'the reconnecting state', () => document.getElementById('screen').dataset.state === 'reconnecting');
      await until(viewer, 'the chat to notice', () => document.getElementById('chat-send').disabled);
      await daemon.restart();
      // Sessions are kept in the state directory, so every page recovers by itself:
      // nobody is asked for the code again after a power cut.
      for (const [page, path] of [[staff, '/camera'], [viewer, '/?stream=aula'], [other, '/?stream=aula']]) {
        const outcome = await until(
          page,
          `${page.person.name}'s page to recover by itself`,
          (camera) => {
            if (location.pathname === '/login') return 'login';
            const recovered = camera
              ? document.getElementById('screen')?.dataset.state === 'live'
              : document.getElementById('chat-send')?.disabled === false;
            return recovered && 'recovered';
          },
          path === '/camera',
        );
        equal(outcome, 'recovered', `${page.person.name}'s ${path} after the restart (not sent to /login)`);
      }
      await until(staff, 'the broadcaster to be live again', () => document.getElementById('screen').dataset.state === 'live');
      const after = (await nextPicture(viewer, back, 'a new live picture after the restart')).hash;
      await nextPicture(viewer, after, 'the picture to keep changing');
      equal(await viewer.textContent('#stage-state'), 'En vivo', 'indicator text');
      await until(viewer, 'the chat to reconnect', () => !document.getElementById('chat-send').disabled);
      await until(other, 'the chat to reconnect', () => !document.getElementById('chat-send').disabled);
      await viewer.fill('#chat-message', 'de vuelta');
      await viewer.press('#chat-message', 'Enter');
      await until(other, 'a chat message after the restart', () =>
        [...document.querySelectorAll('.msg-text')].some((e) => e.textContent === 'de vuelta'),
      );

      await staff.click('#start'); // "Detener"
      await until(viewer, 'the offline state', () => document.getElementById('screen').dataset.state === 'offline');
      equal(await viewer.textContent('#stage-state'), 'Cámara sin señal', 'indicator text');
      assert(await staff.evaluate(() => document.getElementById('preview').srcObject === null), 'staff camera released');

      // Back on air, then the staff tab is closed: offline again.
      await staff.click('#start');
      await nextPicture(viewer, after, 'live again after a new start');
      await staff.close({ runBeforeUnload: true });
      await until(viewer, 'offline after the staff tab closed', () => document.getElementById('screen').dataset.state === 'offline');
    });

    await test("a late picture shows its real age, by the server's clock, on a phone an hour fast", async () => {
      // The broadcast has stopped: 'aula' keeps its last picture. The first viewer saw it
      // arrive live and watches it grow old; wait until that is a few seconds.
      const seconds = (text) => Number(/(\d+) s/.exec(text || '')?.[1] ?? NaN);
      await until(
        viewer,
        'the last picture to be 3 s old',
        () => Number(/(\d+) s/.exec(document.getElementById('age').textContent)?.[1] ?? 0) >= 3,
      );
      // A phone whose clock is an hour fast joins now: it is sent that old picture at once.
      const context = await browser.newContext({ locale: 'es-CO', viewport: { width: 1280, height: 800 }, httpCredentials: CHALLENGED });
      await context.addInitScript(() => {
        const realNow = Date.now;
        Date.now = () => realNow() + 3600 * 1000;
      });
      const page = watchPage(await context.newPage(), 'fast clock');
      page.person = { as: 'parent', name: 'Reloj' };
      const sockets = [];
      page.on('websocket', (ws) => sockets.push(ws.url()));
      await logIn(page, 'Reloj', CODES.parent);
      if (where(page) !== '/?stream=aula') await page.goto(daemon.base + '/?stream=aula');
      const late = await until(page, 'the last picture', () => {
        const img = document.getElementById('picture');
        return img && !img.hidden && img.complete && img.naturalWidth > 0 && document.getElementById('age').textContent;
      });
      assert(
        sockets.some((url) => url.endsWith('/video/aula?format=binary&meta=1')),
        `the page asks for capture times: ${sockets.join(', ')}`,
      );
      // Counted from its arrival it would be "ahora"; by the phone's own clock, an hour.
      const theirs = seconds(await viewer.textContent('#age'));
      const mine = seconds(late);
      assert(mine >= 3 && Math.abs(mine - theirs) <= 2, `the late picture's age "${late}" against the first viewer's ${theirs} s`);
      await context.close();
    });

    await test('es-CO gets Spanish, en-US English, and the language toggle is remembered', async () => {
      const checks = [
        ['es-CO', 'es', 'Enviar', 'Descargar foto', 'Empezar a transmitir'],
        ['en-US', 'en', 'Send', 'Download photo', 'Start broadcasting'],
      ];
      for (const [locale, lang, send, snapshot, start] of checks) {
        // Staff, to see both pages.
        const page = await open(`viewer-${locale}`, '/', { locale, as: 'staff' });
        equal(await page.evaluate(() => document.documentElement.lang), lang, `${locale} page language`);
        equal(await page.textContent('#chat-send'), send, `${locale} send button`);
        equal(await page.textContent('#snapshot .label-long'), snapshot, `${locale} snapshot button`);
        await page.goto(`${daemon.base}/camera`);
        equal(await page.textContent('#start'), start, `${locale} start button`);
        equal(await page.textContent('label[for="stream"]'), lang === 'es' ? 'Nombre de la transmisión' : 'Stream name', `${locale} label`);
        if (lang === 'en') {
          await page.goto(daemon.base + '/');
          await until(page, 'an English state', () => ['Live', 'Connecting…', 'Camera offline'].includes(document.getElementById('stage-state').textContent));
          await page.click('#lang-toggle');
          equal(await page.textContent('#chat-send'), 'Enviar', 'after the toggle');
          await page.reload();
          equal(await page.textContent('#chat-send'), 'Enviar', 'after a reload');
          equal(await page.evaluate(() => document.documentElement.lang), 'es', 'remembered language');
          // System messages are localised from their fields: someone joins.
          const joiner = await open('joiner', '/');
          await until(page, 'a Spanish join note', () =>
            [...document.querySelectorAll('#messages .system')].some((e) => /^(1 persona entró|\d+ personas entraron)( · (1 persona salió|\d+ personas salieron))? · \d+ personas en línea$/.test(e.textContent)),
          );
          await joiner.context().close();
        }
        await page.context().close();
      }
    });

    await test('login page in Spanish and English, its errors, logout, and a dead session', async () => {
      const texts = {
        es: {
          pageTitle: 'Entrar · kindercam',
          title: 'Cámara del aula',
          name: 'Tu nombre en el chat',
          code: 'Código de acceso',
          submit: 'Entrar',
          show: 'Mostrar',
          hide: 'Ocultar',
          needCode: 'Escribe el código de acceso.',
          wrong: 'Ese código no es correcto. Revísalo o pídeselo de nuevo al personal del jardín.',
        },
        en: {
          pageTitle: 'Sign in · kindercam',
          title: 'Classroom camera',
          name: 'Your name in the chat',
          code: 'Access code',
          submit: 'Sign in',
          show: 'Show',
          hide: 'Hide',
          needCode: 'Enter the access code.',
          wrong: 'That code is not right. Check it, or ask the daycare staff for it again.',
        },
      };
      for (const [locale, lang] of [['es-CO', 'es'], ['en-US', 'en']]) {
        const want = texts[lang];
        // Nobody logged in: the camera page sends the browser to the login page.
        const page = await open(`login-${locale}`, '/', { locale, as: null });
        equal(where(page), '/login', `${locale}: where a browser without a session lands`);
        equal(await page.evaluate(() => document.documentElement.lang), lang, `${locale} page language`);
        equal(await page.title(), want.pageTitle, `${locale} title`);
        equal(await page.textContent('h1'), want.title, `${locale} heading`);
        equal(await page.textContent('label[for="name"]'), want.name, `${locale} name label`);
        equal(await page.textContent('label[for="code"]'), want.code, `${locale} code label`);
        equal(await page.textContent('#login-submit'), want.submit, `${locale} submit button`);
        // Exactly one form, posting exactly `name` and `code` to /login.
        const forms = await page.$$eval('form', (all) =>
          all.map((f) => ({
            method: f.method,
            action: new URL(f.action).pathname,
            enctype: f.enctype,
            fields: [...f.elements].filter((e) => e.name).map((e) => `${e.name}:${e.type}:${e.autocomplete}`),
          })),
        );
        equal(
          forms,
          [{ method: 'post', action: '/login', enctype: 'application/x-www-form-urlencoded', fields: ['name:text:username', 'code:password:current-password'] }],
          `${locale} login form`,
        );
        // The code can be shown while typing it on a phone.
        await page.fill('#code', 'abc');
        await page.click('#reveal');
        equal([await page.getAttribute('#code', 'type'), await page.textContent('#reveal')], ['text', want.hide], 'code shown');
        await page.click('#reveal');
        equal([await page.getAttribute('#code', 'type'), await page.textContent('#reveal')], ['password', want.show], 'code hidden');
        // A missing code is caught before anything is sent.
        await page.fill('#name', 'Mamá de Sofía');
        await page.fill('#code', '');
        await page.click('#login-submit');
        equal(await page.textContent('#login-error'), want.needCode, `${locale} missing code`);
        equal(await page.getAttribute('#code', 'aria-invalid'), 'true', 'code field marked');
        // A wrong code: the server sends the browser back with ?error=wrong_code.
        await page.fill('#code', 'not-the-code');
        const [posted] = await Promise.all([
          page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/login', { timeout: WAIT_MS }),
          page.click('#login-submit'),
        ]);
        equal([posted.status(), posted.headers().location], [303, '/login?error=wrong_code'], 'the server refused the code');
        await until(page, `the ${locale} wrong-code message`, (text) => document.getElementById('login-error').textContent === text, want.wrong);
        equal(await page.inputValue('#name'), 'Mamá de Sofía', 'name kept after the error');
        equal(await page.getAttribute('#code', 'aria-invalid'), 'true', 'code field marked');
        await page.context().close();
      }

      // The other answers of the server, in Spanish.
      const page = await open('login-errors', '/login', { as: null });
      await page.goto(`${daemon.base}/login?error=rate_limited`);
      equal(await page.textContent('#login-error'), 'Demasiados intentos fallidos. Espera unos segundos antes de volver a intentarlo.', 'rate limited');
      assert(await page.isDisabled('#login-submit'), 'no more tries for a while');
      await until(page, 'the countdown', () => /^Espera \d+ s$/.test(document.getElementById('login-submit').textContent));
      await page.goto(`${daemon.base}/login?error=busy`);
      equal(await page.textContent('#login-error'), 'El servidor está ocupado revisando otros códigos. Inténtalo de nuevo en unos segundos.', 'busy');
      equal(await page.$$eval('[aria-invalid]', (fields) => fields.length), 0, 'busy marks no field as wrong');
      await until(page, 'a short wait before retrying', () => /^Espera \d+ s$/.test(document.getElementById('login-submit').textContent));
      await page.goto(`${daemon.base}/login?error=bad_name`);
      equal(await page.textContent('#login-error'), 'Escribe un nombre de 1 a 32 caracteres.', 'bad name');
      equal(await page.getAttribute('#name', 'aria-invalid'), 'true', 'name field marked');
      equal(where(page), '/login', 'the address, so that a reload does not repeat the error');

      // Logged in, the bar says who.
      await logIn(page, 'Mamá de Sofía', VIEWER_CODE);
      await until(page, 'the account in the bar', () => !document.getElementById('account').hidden);
      equal(await page.textContent('#account-name'), 'Mamá de Sofía', 'who is logged in');
      const cookies = await page.context().cookies();
      const session = cookies.find((c) => c.name === 'kc_session');
      assert(session?.httpOnly && session.sameSite === 'Strict', `an HttpOnly SameSite=Strict session cookie: ${JSON.stringify(session)}`);

      // A link to the camera shared on another site arrives without the
      // SameSite=Strict cookie, at the login page: which sees the session and goes on.
      await page.context().route('http://families.example/', (route) =>
        route.fulfill({ contentType: 'text/html', body: `<a id="shared" href="${daemon.base}/">La cámara del aula</a>` }),
      );
      await page.goto('http://families.example/');
      const visited = [];
      page.on('framenavigated', (frame) => frame === page.mainFrame() && visited.push(new URL(frame.url()).pathname));
      await page.click('#shared');
      await until(page, 'the camera page after a shared link', () => location.pathname === '/' && !document.getElementById('account').hidden);
      assert(visited.includes('/login'), `the shared link went through the login page: ${visited}`);

      // Logging out returns to the login page, and the old session is dead.
      equal(await page.textContent('#logout'), 'Salir', 'logout button');
      await Promise.all([page.waitForURL((u) => u.pathname === '/login', { timeout: WAIT_MS }), page.click('#logout')]);
      equal((await page.context().cookies()).filter((c) => c.name === 'kc_session').length, 0, 'cookies after logout');
      const stale = await browser.newContext({ locale: 'es-CO', httpCredentials: CHALLENGED });
      await stale.addCookies(cookies);
      const old = watchPage(await stale.newPage(), 'stale');
      await old.goto(`${daemon.base}/`);
      equal(where(old), '/login', 'where the old session cookie gets');
      equal((await stale.request.get(`${daemon.base}/config.json`)).status(), 401, '/config.json with the old cookie');
      await Promise.all([stale.close(), page.context().close()]);
    });

    await test("staff delete a parent's message and mute the parent; the parent sees both in Spanish", async () => {
      const parent = await open('parent', '/', { name: 'Papá de Tomás' });
      const teacher = await open('teacher', '/', { as: 'staff', name: 'Profe Lucía' });
      for (const page of [parent, teacher]) {
        await until(page, 'the chat to connect', () => !document.getElementById('chat-send').disabled);
      }
      const send = async (page, text) => {
        await page.fill('#chat-message', text);
        await page.press('#chat-message', 'Enter');
      };
      const shown = (page, text) =>
        until(page, `"${text}" in the chat`, (t) => [...document.querySelectorAll('.msg-text')].some((e) => e.textContent === t), text);
      const message = (page, text) => page.locator('#messages li.msg').filter({ has: page.getByText(text, { exact: true }) });

      // Staff speak with a badge that parents can see.
      await send(teacher, 'Hoy hay reunión de familias a las 5.');
      await shown(parent, 'Hoy hay reunión de familias a las 5.');
      equal(await message(parent, 'Hoy hay reunión de familias a las 5.').locator('.msg-staff').textContent(), 'Personal', 'staff badge');

      // Delete, with the mouse: a confirmation first, then gone for everyone.
      await send(parent, 'mensaje equivocado');
      await shown(teacher, 'mensaje equivocado');
      equal(await parent.locator('.msg-tool').count(), 0, 'moderation buttons shown to a parent');
      const wrong = message(teacher, 'mensaje equivocado');
      await wrong.locator('.msg-tool.delete').click();
      equal(await wrong.locator('.confirm-text').textContent(), '¿Borrar este mensaje para todos?', 'delete confirmation');
      await wrong.locator('.confirm-yes').click();
      for (const page of [parent, teacher]) {
        await until(page, 'the deleted message to go', (t) => ![...document.querySelectorAll('.msg-text')].some((e) => e.textContent === t), 'mensaje equivocado');
      }

      // Mute, with the keyboard: Escape cancels, Enter confirms.
      await send(parent, 'otro mensaje');
      await shown(teacher, 'otro mensaje');
      const mute = message(teacher, 'otro mensaje').locator('.msg-tool.mute');
      equal(await mute.getAttribute('aria-label'), 'Silenciar a Papá de Tomás durante 10 min', 'mute button name');
      await mute.focus();
      await teacher.keyboard.press('Enter');
      await until(teacher, 'focus on the confirmation', () => document.activeElement?.classList.contains('confirm-yes'));
      await teacher.keyboard.press('Escape');
      await until(teacher, 'the confirmation to close and focus to return', () => !document.querySelector('.msg-confirm') && document.activeElement?.classList.contains('mute'));
      await teacher.keyboard.press('Enter');
      await until(teacher, 'focus on the confirmation', () => document.activeElement?.classList.contains('confirm-yes'));
      equal(await teacher.textContent('.msg-confirm .confirm-text'), '¿Silenciar a Papá de Tomás durante 10 min? No podrá escribir en el chat.', 'mute confirmation');
      await teacher.keyboard.press('Enter');
      for (const page of [parent, teacher]) {
        await until(page, 'the Spanish mute notice', (t) => [...document.querySelectorAll('#messages .system')].some((e) => e.textContent === t), 'El personal silenció a Papá de Tomás durante 10 min.');
      }

      // The muted parent's next message is refused, and told so in Spanish.
      await send(parent, '¿por qué?');
      const error = await until(parent, 'the muted error', () => {
        const box = document.getElementById('chat-error');
        return !box.hidden && box.textContent;
      });
      assert(/^El personal pausó tus mensajes/.test(error), `muted error: ${error}`);
      equal(await teacher.getByText('¿por qué?', { exact: true }).count(), 0, "the muted parent's message reached staff");
      await Promise.all([parent.context().close(), teacher.context().close()]);
    });

    await test('a parent sees no broadcast navigation and gets 403 at /camera', async () => {
      const parent = await open('parent-nav', '/', { name: 'Abuela Rosa' });
      await until(parent, 'the account in the bar', () => !document.getElementById('account').hidden);
      assert(!(await parent.isVisible('#to-camera')), 'broadcast link shown to a parent');
      assert(!(await parent.isVisible('#account-role')), 'staff tag shown to a parent');
      parent.expectHttp(403, '/camera');
      equal((await parent.goto(`${daemon.base}/camera`)).status(), 403, '/camera for a parent');
      const teacher = await open('staff-nav', '/', { as: 'staff' });
      await until(teacher, 'the broadcast link for staff', () => !document.getElementById('to-camera').hidden);
      await Promise.all([teacher.waitForURL((u) => u.pathname === '/camera', { timeout: WAIT_MS }), teacher.click('#to-camera')]);
      await Promise.all([parent.context().close(), teacher.context().close()]);
    });

    await test('the director adds a family in the admin page and gets its invite with a QR code', async () => {
      const admin = await open('director', '/', { as: 'admin', name: 'Directora Marta' });
      // The bar leads the director (only) to the admin page; the role tag says who.
      await until(admin, 'the admin link', () => !document.getElementById('to-admin').hidden);
      equal(await admin.textContent('#to-admin'), 'Administración', 'admin link');
      equal(await admin.textContent('#account-role'), 'Dirección', "the director's role tag");
      await Promise.all([admin.waitForURL((u) => u.pathname === '/admin', { timeout: WAIT_MS }), admin.click('#to-admin')]);
      equal(await admin.title(), 'Administración · kindercam', 'admin page title');
      await until(admin, 'both cameras as rooms', () =>
        ['camera', 'patio'].every((r) => document.querySelector(`#room-choices input[value="${r}"]`)),
      );
      assert(await admin.isChecked('#room-choices input[value="camera"]'), 'the main camera ticked for a new family');
      assert(!(await admin.isChecked('#room-choices input[value="patio"]')), 'the patio not ticked for a new family');

      // Bad input is caught and shown beside its field, and nothing is added.
      await admin.fill('#family-name', 'Familia Pérez');
      await admin.fill('#room-extra', 'Sala Dos');
      await admin.click('#family-submit');
      equal(
        await admin.textContent('#family-rooms-error'),
        '«Sala» no es un nombre de sala válido: de 1 a 32 minúsculas, números, - y _.',
        'a bad room name',
      );
      equal(await admin.getAttribute('#room-extra', 'aria-invalid'), 'true', 'the room field marked');
      await admin.fill('#room-extra', '');
      await admin.fill('#family-name', '   ');
      await admin.click('#family-submit');
      equal(await admin.textContent('#family-name-error'), 'Escribe un nombre de 1 a 64 caracteres.', 'a blank name');
      equal(await admin.locator('#family-list li').count(), 0, 'families after refused input');

      const invite = await addFamily(admin, 'Familia Pérez', { max: 2 });
      assert(/^\S{6,}$/.test(invite.code), `a code on the invite: ${invite.code}`);
      equal(invite.link, `${daemon.base}/login#code=${invite.code}`, 'the login link, with the code in its fragment');
      equal(await admin.textContent('#invite-page'), `${daemon.base}/login`, 'the page address on the invite');
      const qr = await until(admin, 'the QR image to load', () => {
        const img = document.getElementById('invite-qr');
        const box = img.getBoundingClientRect();
        return !img.hidden && img.complete && img.naturalWidth > 0 && box.width > 0 && box.height > 0 && [img.naturalWidth, img.src.slice(0, 5)];
      });
      assert(qr[0] >= 100, `a QR image of some size: ${qr}`);
      equal(qr[1], 'blob:', 'the QR image is a blob: URL (the CSP allows no other)');
      const card = familyCard(admin, 'Familia Pérez');
      equal(await card.locator('.room-tag').allTextContents(), ['Cámara principal (camera)'], 'its rooms');
      equal(await card.locator('.family-devices').textContent(), 'Hasta 2 dispositivos a la vez', 'its device limit');
      equal(await card.locator('.family-watching').textContent(), 'Mirando ahora: 0', 'nobody of it watching');
      // On paper, only the invite.
      await admin.emulateMedia({ media: 'print' });
      assert(await admin.isVisible('#invite-card'), 'the invite printed');
      for (const other of ['#family-form', '#family-list', '#log-form', '.bar', '#invite-print']) {
        assert(!(await admin.isVisible(other)), `${other} printed with the invite`);
      }
      await admin.emulateMedia({ media: 'screen' });
      await admin.click('#invite-close');
      assert(await admin.isHidden('#invite'), 'the invite closes');
      equal(await admin.textContent('#invite-code'), '', 'the code gone from the page once closed');
      await admin.context().close();

      // Staff have no way in.
      const teacher = await open('staff-admin', '/', { as: 'staff' });
      await until(teacher, 'the bar', () => !document.getElementById('account').hidden);
      assert(!(await teacher.isVisible('#to-admin')), 'the admin link shown to staff');
      teacher.expectHttp(403, '/admin');
      equal((await teacher.goto(`${daemon.base}/admin`)).status(), 403, '/admin for staff');
      await teacher.context().close();
    });

    await test("the director sets a room's opening hours in the admin page and opens it again", async () => {
      const admin = await open('director-hours', '/admin', { as: 'admin', name: 'Directora Marta' });
      await until(admin, 'the rooms in the hours form', () => document.querySelector('#hours-room option[value="patio"]'));
      await admin.selectOption('#hours-room', 'patio');
      await until(admin, 'the patio has no hours', () =>
        document.getElementById('hours-state').textContent === 'Esta sala está siempre abierta para las familias.',
      );
      equal(await admin.locator('#hours-periods .hours-period').count(), 1, 'a usual school day offered');
      await admin.fill('#hours-zone', 'America/Bogota');
      const period = admin.locator('#hours-periods .hours-period').first();
      // A period that runs backwards (a night shift in one line) is caught in the page.
      await period.locator('input[name=from]').fill('22:00');
      await period.locator('input[name=to]').fill('06:00');
      await admin.click('#hours-save');
      equal(
        await admin.textContent('#hours-error'),
        '«Hasta» debe ser después de «Desde»; para pasar la medianoche, termina a las 24:00 y sigue desde las 00:00.',
        'a backwards period',
      );
      assert(await period.locator('input[name=to]').evaluate((i) => i === document.activeElement), 'focus on its end');
      await period.locator('input[name=from]').fill('07:30');
      await period.locator('input[name=to]').fill('16:30');
      await period.locator('input[value=fri]').setChecked(false);
      await admin.fill('#hours-date', '2026-12-25');
      await admin.click('#hours-add-date');
      // An unknown zone gets past the page; the server refuses it naming the field.
      await admin.fill('#hours-zone', 'Mars/Olympus');
      admin.expectHttp(400, '/api/streams/patio/schedule');
      await admin.click('#hours-save');
      await until(admin, 'the refusal', () => !document.getElementById('hours-error').hidden &&
        document.getElementById('hours-error').textContent.includes('timezone'));
      await until(admin, 'focus on the zone', () => document.activeElement?.id === 'hours-zone');
      await admin.fill('#hours-zone', 'America/Bogota');
      await admin.click('#hours-save');
      await until(admin, 'the hours saved', () =>
        document.getElementById('hours-state').textContent === 'Esta sala tiene horario: las familias solo la ven dentro de él.',
      );
      const saved = await admin.evaluate(async () => (await fetch('/api/streams/patio/schedule')).json());
      equal(
        [saved.timezone, saved.open, saved.closed_dates],
        ['America/Bogota', [{ days: ['mon', 'tue', 'wed', 'thu'], from: '07:30', to: '16:30' }], ['2026-12-25']],
        'the hours as the API has them',
      );
      // The same hours come back on a fresh page.
      await admin.reload();
      await until(admin, 'the rooms again', () => document.querySelector('#hours-room option[value="patio"]'));
      await admin.selectOption('#hours-room', 'patio');
      await until(admin, 'the saved hours shown', () => document.querySelector('#hours-dates li button'));
      equal(await admin.inputValue('#hours-zone'), 'America/Bogota', 'the zone shown');
      assert(!(await admin.isChecked('#hours-periods input[value=fri]')), 'Friday unticked');
      await admin.click('#hours-always');
      await until(admin, 'always open again', () =>
        document.getElementById('hours-state').textContent === 'Esta sala está siempre abierta para las familias.',
      );
      equal(await admin.evaluate(async () => (await fetch('/api/streams/patio/schedule')).json()), null, 'no hours in the API');
      await admin.context().close();
    });

    await test('a family logs in with its invite, sees only its room, and is logged out when revoked (es-CO, en-US)', async () => {
      const texts = {
        'es-CO': {
          fromInvite: 'El código de tu familia ya está escrito: solo falta tu nombre.',
          watching: 'Mirando ahora: 1',
          confirm: (n) => `¿Revocar el acceso de ${n}? Sus dispositivos dejan de ver al instante y su código deja de funcionar.`,
          yes: 'Sí, revocar',
          revoked: (n) => `${n} ya no tiene acceso.`,
          ended: 'Se cerró tu sesión. Para seguir mirando, escribe el código otra vez; si ya no funciona, pide uno nuevo al personal del jardín.',
          family: 'Familia Rojas',
          parent: 'Mamá de Lucas',
        },
        'en-US': {
          fromInvite: 'Your family’s code is already filled in: just add your name.',
          watching: 'Watching now: 1',
          confirm: (n) => `Revoke ${n}’s access? Its devices stop watching at once and its code stops working.`,
          yes: 'Yes, revoke',
          revoked: (n) => `${n} no longer has access.`,
          ended: 'You were logged out. To keep watching, enter the code again; if it no longer works, ask the daycare staff for a new one.',
          family: 'The Smith family',
          parent: "Emma's dad",
        },
      };
      for (const [locale, want] of Object.entries(texts)) {
        const admin = await open(`director-${locale}`, '/admin', { as: 'admin', name: 'Directora Marta', locale });
        const invite = await addFamily(admin, want.family);
        await admin.click('#invite-close');

        const context = await browser.newContext({ locale, viewport: { width: 1280, height: 800 }, httpCredentials: CHALLENGED });
        const family = watchPage(await context.newPage(), `family-${locale}`);
        family.person = { as: 'family', name: want.parent };
        await family.goto(invite.link);
        equal(await family.textContent('#login-note'), want.fromInvite, `${locale}: the invite note`);
        equal(await family.inputValue('#code'), invite.code, `${locale}: the code filled in`);
        equal(new URL(family.url()).hash, '', `${locale}: the code left in the address bar`);
        equal(await family.inputValue('#name'), '', `${locale}: the name left to type`);
        await family.fill('#name', want.parent);
        await Promise.all([family.waitForURL((u) => u.pathname === '/', { timeout: WAIT_MS }), family.click('#login-submit')]);
        await nextPicture(family, null, `${locale}: the family's live picture`);
        await until(family, 'the picker', () => document.querySelectorAll('#stream-select option').length > 0);
        equal(await family.$$eval('#stream-select option', (os) => os.map((o) => o.value)), ['camera'], `${locale}: the rooms in the picker`);
        equal(await family.textContent('#account-family'), want.family, `${locale}: the family beside the name`);
        // Another room in the address is not for this family: the page stays on its own.
        await family.goto(`${daemon.base}/?stream=${SECOND_ROOM}`);
        await nextPicture(family, null, `${locale}: the live picture again`);
        equal(where(family), '/?stream=camera', `${locale}: the room watched after asking for ${SECOND_ROOM}`);

        // The director sees the family watching, in its card and under its room.
        const card = familyCard(admin, want.family);
        await until(admin, `${locale}: the family watching`, (name) => {
          const item = [...document.querySelectorAll('#family-list li.family')].find((li) => li.querySelector('.family-name').textContent === name);
          return item?.querySelector('.family-watching').textContent.endsWith(': 1');
        }, want.family);
        equal(await card.locator('.family-watching').textContent(), want.watching, `${locale}: watching count`);
        await until(admin, `${locale}: the parent under "camera" in watching now`, ([who, fam]) =>
          [...document.querySelectorAll('.room-group[data-room="camera"] .viewer')].some(
            (li) => li.querySelector('.viewer-name').textContent === who && li.querySelector('.viewer-detail').textContent === fam,
          ), [want.parent, want.family]);

        // Revoked in the page, with a confirmation first.
        await card.locator('[data-action="revoke"]').click();
        equal(await card.locator('.confirm-text').textContent(), want.confirm(want.family), `${locale}: the revoke confirmation`);
        family.expectHttp(401, '/config.json');
        family.expectHttp(401, '/stats.json');
        const revokedAt = Date.now();
        await card.locator('.confirm-yes').click();
        await family.waitForURL((u) => u.pathname === '/login', { timeout: 5000 });
        const took = Date.now() - revokedAt;
        await until(family, `${locale}: the logged-out note`, (text) => document.getElementById('login-note').textContent === text, want.ended);
        console.log(`# ${locale}: the revoked family's page was on the login page ${took} ms after the click`);
        await until(admin, `${locale}: the card gone`, (name) => ![...document.querySelectorAll('.family-name')].some((e) => e.textContent === name), want.family);
        equal(await admin.textContent('#admin-note'), want.revoked(want.family), `${locale}: the note after revoking`);
        // Its code no longer opens anything.
        await family.fill('#name', want.parent);
        await family.fill('#code', invite.code);
        await family.click('#login-submit');
        await until(family, `${locale}: the old code refused`, () => !document.getElementById('login-error').hidden);
        await Promise.all([context.close(), admin.context().close()]);
      }
    });

    await test('a family over its device limit is told so in both languages, and the first device keeps watching', async () => {
      const admin = await open('director-limit', '/admin', { as: 'admin', name: 'Directora Marta' });
      const invite = await addFamily(admin, 'Familia Uno', { max: 1 });
      await admin.context().close();
      const first = await familyDevice('first-device', invite, 'Papá de Ana');
      const before = (await nextPicture(first, null, 'the first device live')).hash;
      const second = await familyDevice('second-device', invite, 'Mamá de Ana', { locale: 'en-US' });
      await until(second, 'the refusal', () => document.getElementById('screen').dataset.state === 'refused');
      equal(
        await second.textContent('#placeholder-text'),
        'Your family is already watching on 1 device, the most allowed at once. Close the camera on the other device and try again.',
        'the English refusal',
      );
      equal(await second.textContent('#stage-state'), 'Device limit', 'the English state');
      await second.click('#lang-toggle');
      equal(
        await second.textContent('#placeholder-text'),
        'Tu familia ya está mirando en 1 dispositivo, el máximo permitido a la vez. Cierra la cámara en el otro dispositivo y vuelve a intentarlo.',
        'the Spanish refusal',
      );
      equal(await second.textContent('#retry'), 'Intentar de nuevo', 'the retry button');
      // No knocking again and again: while the first device gets two new
      // pictures (a reconnect would come within 0.5 s), the refused page opens
      // no video socket and stays refused.
      const sockets = [];
      second.on('websocket', (ws) => sockets.push(ws.url()));
      const next = (await nextPicture(first, before, 'the first device still receiving')).hash;
      await nextPicture(first, next, 'the first device still receiving, again');
      equal(sockets.filter((u) => u.includes('/video')), [], 'video sockets opened by the refused page');
      equal(await second.evaluate(() => document.getElementById('screen').dataset.state), 'refused', 'still refused');
      // Once the first device leaves, "try again" brings the picture.
      await first.context().close();
      await until(second, 'the picture after the first device left', () => {
        const state = document.getElementById('screen').dataset.state;
        if (state === 'refused') document.getElementById('retry').click();
        return state === 'live';
      });
      await second.context().close();
    });

    await test('the director draws a privacy mask over the live picture, and the family sees it black', async () => {
      const admin = await open('director-masks', '/admin', { as: 'admin', name: 'Directora Marta' });
      await until(admin, 'the rooms in the mask editor', () => document.querySelectorAll('#mask-room option').length > 1);
      await admin.selectOption('#mask-room', SECOND_ROOM);
      await until(admin, 'no masks yet', () => document.getElementById('mask-status').textContent === 'Sin zonas tapadas.');
      await until(admin, 'the live picture in the editor', () => !document.getElementById('mask-stage').classList.contains('no-picture'));
      // Drawn with the mouse, as a director at a computer would: pointer events,
      // the same ones a finger on a phone makes.
      await admin.locator('#mask-stage').scrollIntoViewIfNeeded();
      const box = await admin.locator('#mask-stage').boundingBox();
      const rect = { x: 0.1, y: 0.15, w: 0.4, h: 0.5 };
      await admin.mouse.move(box.x + rect.x * box.width, box.y + rect.y * box.height);
      await admin.mouse.down();
      await admin.mouse.move(box.x + (rect.x + rect.w / 2) * box.width, box.y + (rect.y + rect.h / 2) * box.height, { steps: 4 });
      await admin.mouse.move(box.x + (rect.x + rect.w) * box.width, box.y + (rect.y + rect.h) * box.height, { steps: 4 });
      await admin.mouse.up();
      equal(await admin.locator('#mask-list li').count(), 1, 'areas listed after drawing one');
      equal(await admin.textContent('#mask-status'), 'Cambios sin guardar.', 'the unsaved note');
      await admin.click('#mask-save');
      await until(admin, 'the saved note', () => document.getElementById('mask-status').textContent.startsWith('Guardado.'));
      const stored = await admin.evaluate(async (room) => (await fetch(`/api/streams/${room}/masks`)).json(), SECOND_ROOM);
      equal(stored.length, 1, 'masks stored');
      for (const key of ['x', 'y', 'w', 'h']) {
        assert(Math.abs(stored[0][key] - rect[key]) < 0.02, `stored ${key} ${stored[0][key]} is near the drawn ${rect[key]}`);
      }

      // The editor's own picture is now the server's masked snapshot.
      const edited = await until(admin, 'the editor showing the mask burned in', probeMask, { id: 'mask-picture', rect, prev: null, dark: true });
      assert(edited.whole > 20, `the editor's picture is not all black (mean ${edited.whole.toFixed(1)})`);

      // A family of that room sees the black rectangle in every picture, while the picture still changes.
      const invite = await addFamily(admin, 'Familia Patio', { rooms: [SECOND_ROOM] });
      await admin.click('#invite-close');
      const family = await familyDevice('family-masks', invite, 'Abuela de Tomás');
      let previous = null;
      for (let i = 0; i < 3; i++) {
        const seen = await until(family, `the family's picture ${i + 1}`, probeMask, { id: 'picture', rect, prev: previous, dark: false });
        assert(seen.inside <= 8, `picture ${i + 1}: the masked area is black (brightest ${seen.inside})`);
        assert(seen.whole > 20, `picture ${i + 1}: the rest is not black (mean ${seen.whole.toFixed(1)})`);
        previous = seen.hash;
      }

      // Removed again in the editor: the room is whole for the next tests.
      await admin.click('#mask-clear');
      await until(admin, 'the cleared note', () => document.getElementById('mask-status').textContent.startsWith('Zonas quitadas.'));
      equal(await admin.evaluate(async (room) => (await fetch(`/api/streams/${room}/masks`)).json(), SECOND_ROOM), [], 'masks after clearing');
      await Promise.all([family.context().close(), admin.context().close()]);
    });

    await test("the prototype's chat page, from another origin, talks through /chat/server.php", async () => {
      const ws = encodeURIComponent(daemon.ws);
      const ana = await open('proto-ana', '/', { name: 'Ana' });
      await ana.goto(`${prototypeSite.origin}/index.php?ws=${ws}`);
      const beto = await open('proto-beto', '/', { as: 'staff', name: 'Beto' });
      await beto.goto(`${prototypeSite.origin}/index.php?ws=${ws}`);
      for (const page of [ana, beto]) {
        await until(page, 'connected', () => document.getElementById('message_box').textContent.includes('Connected!'));
      }
      // The prototype's page empties its message field on every message it
      // receives (presence updates too): a user who types and clicks while one
      // arrives sends nothing. Typing and clicking in one task keeps the test
      // from racing them, through the page's own send code.
      const say = (page, name, message) => page.evaluate(([name, message]) => {
        document.getElementById('name').value = name;
        document.getElementById('message').value = message;
        document.getElementById('send-btn').click();
      }, [name, message]);
      await say(ana, 'Ana', 'hola desde el prototipo');
      await until(beto, "Ana's message", () =>
        [...document.querySelectorAll('#message_box .user_message')].some((e) => e.textContent === 'hola desde el prototipo'),
      );
      await say(beto, 'Beto', 'bienvenida');
      await until(ana, "Beto's reply", () =>
        [...document.querySelectorAll('#message_box .user_message')].some((e) => e.textContent === 'bienvenida'),
      );
      equal(await ana.inputValue('#message'), '', 'the message field is cleared after a message');
      // And kindercam's own chat of the camera is the same room.
      const page = await open('proto-kinder', '/?stream=camera', { name: 'Carla' });
      await until(page, 'the prototype messages in the chat', () =>
        [...document.querySelectorAll('#messages li')].some((li) => li.textContent.includes('hola desde el prototipo')),
      );
      await Promise.all([ana, beto, page].map((p) => p.context().close()));
    });

    await test("the prototype's camara page sends toDataURL() PNGs to /chat/serverCam.php and visorCamara shows them", async () => {
      const ws = encodeURIComponent(daemon.ws);
      const visor = await open('proto-visor', '/', { name: 'Papá' });
      await visor.goto(`${prototypeSite.origin}/visorCamara.php?ws=${ws}`);
      const camara = await open('proto-camara', '/', { as: 'staff', name: 'Profe' });
      await camara.goto(`${prototypeSite.origin}/camara.php?ws=${ws}`);
      const first = await nextImg(visor, 'visor', null, 'a first picture from the camara page');
      equal(first.size, [320, 240], 'the camara canvas size');
      assert(first.jpeg, 'the viewer is sent JPEG data URLs');
      await nextImg(visor, 'visor', first.hash, 'the picture to change');
      // kindercam's own viewer of the same stream sees it too.
      const viewer2 = await open('proto-kinder-viewer', `/?stream=${PROTOTYPE_STREAM}`, { name: 'Mamá' });
      const seen = await nextPicture(viewer2, null, 'the prototype stream in the kindercam viewer');
      equal(seen.size, [320, 240], 'size in the kindercam viewer');
      await Promise.all([visor, camara, viewer2].map((p) => p.context().close()));
    });

    await test('a PNG canvas uploaded to /upload/NAME reaches the kindercam viewer as changing JPEG frames', async () => {
      const cam = await open('png-uploader', '/camera', { as: 'staff', name: 'Profe PNG' });
      const acks = cam.evaluate(async (wsAddr) => {
        const socket = new WebSocket(`ws://${wsAddr}/upload/png-canvas`);
        await new Promise((resolve, reject) => {
          socket.onopen = resolve;
          socket.onerror = () => reject(new Error('upload socket failed'));
        });
        const canvas = document.createElement('canvas');
        canvas.width = 160;
        canvas.height = 120;
        const g = canvas.getContext('2d');
        const replies = [];
        for (let i = 0; i < 40; i++) {
          g.fillStyle = `hsl(${(i * 47) % 360}, 80%, 50%)`;
          g.fillRect(0, 0, 160, 120);
          const url = canvas.toDataURL();
          if (!url.startsWith('data:image/png;base64,')) throw new Error(`not a PNG: ${url.slice(0, 30)}`);
          socket.send(url);
          replies.push(JSON.parse(await new Promise((resolve) => (socket.onmessage = (e) => resolve(e.data)))));
          await new Promise((resolve) => setTimeout(resolve, 250));
        }
        socket.close();
        return replies;
      }, daemon.ws);
      const viewer3 = await open('png-viewer', '/?stream=png-canvas', { name: 'Abuela' });
      const first = await nextPicture(viewer3, null, 'a first PNG upload in the viewer');
      equal(first.size, [160, 120], 'the canvas size');
      await nextPicture(viewer3, first.hash, 'the PNG uploads to change the picture');
      const replies = await acks;
      assert(replies.every((r) => r.type === 'ack'), `every PNG acked: ${JSON.stringify(replies.find((r) => r.type !== 'ack'))}`);
      await Promise.all([cam, viewer3].map((p) => p.context().close()));
    });

    await test('the frame-size logic asks for small frames on a late link, full again once timely, and ignores blips', async () => {
      const page = await open('quality-logic', '/?stream=camera', { name: 'Lógica' });
      const seen = await page.evaluate(async () => {
        const q = await import('/quality.js');
        // Frames every `step` ms from `from` to `to` (ms), each `age(t)` old on
        // arrival; the decisions, as [time, size].
        const feed = (governor, from, to, step, age) => {
          const out = [];
          for (let t = from; t < to; t += step) {
            const decision = governor.frame(t, t - age(t));
            if (decision) out.push([t, decision]);
          }
          return out;
        };
        const timely = () => 200;
        const late = () => 2500;
        const g = new q.QualityGovernor({ intervalMs: 500 });
        const r = {};
        r.timely = feed(g, 0, 60_000, 500, timely);
        // Blips: 2.5 s of 3 s-old frames, then a 2.5 s hole with no frames at all.
        r.blips = feed(g, 60_000, 80_000, 500, (t) => (t < 62_500 ? 3000 : 200))
          .concat(feed(g, 82_500, 100_000, 500, timely));
        r.late = feed(g, 100_000, 120_000, 500, late);
        r.sizeWhileLate = g.size;
        // Small frames come in timely, but for 4 s of late ones (more than half
        // the window): the 30 s start again once the median is timely again.
        r.recovery = feed(g, 120_000, 200_000, 500, (t) => (t >= 130_000 && t < 134_000 ? 3000 : 200));
        // Late again within a minute of going back: the next try waits twice as long.
        r.relapse = feed(g, 200_000, 215_000, 500, late);
        r.secondRecovery = feed(g, 215_000, 300_000, 500, timely);
        // A starved link: a frame every 1.5 s where the camera makes one every 0.5 s.
        const starved = new q.QualityGovernor({ intervalMs: 500 });
        r.starved = feed(starved, 0, 20_000, 1500, timely);
        // The same rate of a broadcast whose rate the page does not know: fine.
        r.unknownRate = feed(new q.QualityGovernor({}), 0, 60_000, 1500, timely);
        // Pinned to full by the user: late frames change nothing.
        const pinned = new q.QualityGovernor({ intervalMs: 500 });
        pinned.pinFull();
        r.pinned = feed(pinned, 0, 60_000, 500, late);
        r.constants = [q.LATE_AGE_MS, q.TIMELY_AGE_MS, q.RECOVER_MS];
        return r;
      });
      equal(seen.constants, [1500, 500, 30_000], 'the thresholds');
      equal(seen.timely, [], 'decisions on a timely link');
      equal(seen.blips, [], 'decisions for a 2.5 s blip of late frames and a 2.5 s hole');
      equal(seen.late.map(([, size]) => size), ['small'], 'decisions on a late link');
      const lateAfter = seen.late[0][0] - 100_000;
      assert(lateAfter >= 4000 && lateAfter <= 12_000, `small after ${lateAfter} ms of late frames (persistently late, not at once)`);
      equal(seen.sizeWhileLate, 'small', 'the size asked for');
      equal(seen.recovery.map(([, size]) => size), ['full'], 'decisions while small frames come in timely');
      const recoveredAt = seen.recovery[0][0];
      assert(recoveredAt >= 134_000 + 30_000 && recoveredAt <= 134_000 + 40_000, `full again at ${recoveredAt} ms: 30 s after the late stretch ended at 134000`);
      equal(seen.relapse.map(([, size]) => size), ['small'], 'late again after going back');
      equal(seen.secondRecovery.map(([, size]) => size), ['full'], 'the second recovery');
      const waited = seen.secondRecovery[0][0] - 215_000;
      assert(waited >= 60_000 && waited <= 70_000, `the second recovery waited ${waited} ms (twice 30 s)`);
      equal(seen.starved.map(([, size]) => size), ['small'], 'decisions on a starved link');
      assert(seen.starved[0][0] <= 12_000, `small after ${seen.starved[0][0]} ms of a third of the frames`);
      equal(seen.unknownRate, [], 'decisions on a slow broadcast of unknown rate');
      equal(seen.pinned, [], 'decisions once the user asked for full size');
      await page.context().close();
    });

    await test('a viewer on a late link switches to half-size frames by itself, says so, and goes back to full size', async () => {
      const context = await browser.newContext({ locale: 'es-CO', viewport: { width: 1280, height: 800 }, httpCredentials: CHALLENGED });
      // A link that hands the picture's messages to the page `__lagMs` late, in
      // order (the test turns the lag on and off); `__frames` counts pictures.
      await context.addInitScript(() => {
        const Real = window.WebSocket;
        window.__lagMs = 0;
        window.__frames = 0;
        window.WebSocket = class extends Real {
          set onmessage(handler) {
            let due = 0;
            super.onmessage = handler && ((event) => {
              const video = new URL(this.url).pathname.startsWith('/video');
              const deliver = () => {
                if (this.readyState !== Real.OPEN) return;
                if (video && typeof event.data !== 'string') window.__frames += 1;
                handler.call(this, event);
              };
              const lag = video ? window.__lagMs : 0;
              due = Math.max(performance.now() + lag, due);
              if (due <= performance.now()) deliver();
              else setTimeout(deliver, due - performance.now());
            });
          }
          get onmessage() {
            return super.onmessage;
          }
        };
      });
      const page = watchPage(await context.newPage(), 'weak link');
      page.person = { as: 'parent', name: 'Abuelo en 3G' };
      const sockets = [];
      page.on('websocket', (ws) => new URL(ws.url()).pathname.startsWith('/video') && sockets.push(ws.url()));
      await logIn(page, 'Abuelo en 3G', CODES.parent);
      await page.goto(`${daemon.base}/?stream=camera&quality_test=1`);
      const first = await nextPicture(page, null, 'a first full-size picture');
      equal(first.size, [640, 480], 'the full size');
      assert(await page.isHidden('#quality'), 'no reduced-quality note on a good link');
      const smallBefore = await page.evaluate(async () =>
        (await (await fetch('/stats.json')).json()).streams.find((s) => s.name === 'camera').frames_small);
      // From now on the picture must never leave the screen, nor the badge say "connecting".
      await page.evaluate(() => {
        window.__states = [];
        new MutationObserver(() => {
          window.__states.push(document.getElementById('screen').dataset.state);
          if (document.getElementById('picture').hidden) window.__states.push('picture hidden');
        }).observe(document.getElementById('screen'), { attributes: true, subtree: true, attributeFilter: ['data-state', 'hidden'] });
        window.__lagMs = 2500;
      });
      const small = await until(page, 'half-size pictures and the note', () => {
        const img = document.getElementById('picture');
        return img.complete && img.naturalWidth === 320 && img.naturalHeight === 240 && !document.getElementById('quality').hidden
          && document.getElementById('quality').textContent;
      });
      equal(small, 'Calidad reducida: conexión débil', 'the note');
      equal(sockets.at(-1), `ws://${daemon.ws}/video/camera?format=binary&meta=1&size=small`, 'the socket asked for small frames');
      await until(page, 'the server making small frames', async (before) =>
        (await (await fetch('/stats.json')).json()).streams.find((s) => s.name === 'camera').frames_small > before, smallBefore);

      // The link recovers: full size again, the note gone.
      await page.evaluate(() => (window.__lagMs = 0));
      await until(page, 'full-size pictures again', () => {
        const img = document.getElementById('picture');
        return img.complete && img.naturalWidth === 640 && document.getElementById('quality').hidden;
      });
      equal(sockets.at(-1), `ws://${daemon.ws}/video/camera?format=binary&meta=1`, 'the socket after recovering');
      const states = await page.evaluate(() => window.__states);
      assert(states.length > 0 && states.every((s) => s === 'live'), `the picture stayed live through both switches: ${states}`);

      // Late again, and the parent taps the note: full size, for good.
      await page.evaluate(() => (window.__lagMs = 2500));
      await until(page, 'half-size pictures and the note again', () =>
        document.getElementById('picture').naturalWidth === 320 && !document.getElementById('quality').hidden);
      const switches = sockets.length;
      await page.click('#quality');
      await until(page, 'full-size pictures after the tap', () => {
        const img = document.getElementById('picture');
        return img.complete && img.naturalWidth === 640 && document.getElementById('quality').hidden;
      });
      equal(sockets.slice(switches), [`ws://${daemon.ws}/video/camera?format=binary&meta=1`], 'sockets after the tap');
      // Twice as long as going small takes (the page's windows are short with
      // ?quality_test=1), still late: it stays at full size.
      const frames = await page.evaluate(() => window.__frames);
      await until(page, '16 more late pictures', (n) => window.__frames >= n + 16, frames);
      equal(sockets.slice(switches).length, 1, 'sockets opened while late after the tap');
      assert(await page.isHidden('#quality'), 'no note after the tap');
      await context.close();
    });

    await test('an <img> of /stream.mjpg shows the moving camera to a logged-in parent', async () => {
      const parent = await open('mjpeg-img', '/', { name: 'Papá MJPEG' });
      // The page's own origin, its session cookie: as a home dashboard would embed it.
      await parent.evaluate(() => {
        const img = document.createElement('img');
        img.id = 'mjpeg';
        img.src = '/stream.mjpg';
        document.body.append(img);
      });
      /** A hash of the <img>'s pixels through a canvas, once it differs from `prev`. */
      const probe = (prev) => {
        const img = document.getElementById('mjpeg');
        if (!img.naturalWidth) return null;
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth;
        canvas.height = img.naturalHeight;
        const g = canvas.getContext('2d');
        g.drawImage(img, 0, 0);
        const d = g.getImageData(0, 0, canvas.width, canvas.height).data;
        let h = 2166136261;
        for (let i = 0; i < d.length; i += 4) h = Math.imul(h ^ d[i] ^ (d[i + 1] << 8) ^ (d[i + 2] << 16), 16777619);
        const hash = (h >>> 0).toString(16);
        return hash === prev ? null : { hash, size: [canvas.width, canvas.height] };
      };
      const first = await until(parent, 'the first MJPEG picture in the <img>', probe, null);
      assert(first.size[0] > 0 && first.size[1] > 0, `a picture: ${JSON.stringify(first.size)}`);
      const asked = Date.now();
      const next = await until(parent, 'the MJPEG picture to change', probe, first.hash);
      equal(next.size, first.size, 'the same size');
      const took = Date.now() - asked;
      assert(took < 5000, `the <img> changed only after ${took} ms`);
      await parent.context().close();
    });

    await test('screenshots of the login page, the viewer (phone, desktop), the broadcaster and the admin page', async () => {
      // A fresh daemon with a fresh state directory (the chat history survives
      // restarts), so the chat shows a real conversation rather than test strings.
      await Promise.all([viewer, other].map((page) => page.context().close()));
      await daemon.kill();
      await daemon.start(undefined, undefined, 'state-screenshots');
      mkdirSync(DOCS, { recursive: true });
      const phoneSize = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };

      const login = await open('login', '/login', { as: null, ...phoneSize });
      await login.fill('#name', 'Mamá de Sofía');
      await login.fill('#code', VIEWER_CODE);
      await login.evaluate(() => document.activeElement?.blur());
      await login.screenshot({ path: path.join(DOCS, 'login.png') });
      await login.context().close();

      const teacher = await open('teacher', '/camera', { as: 'staff', name: 'Profe Lucía' });
      await teacher.click('#start');
      await until(teacher, 'the broadcast', () => document.getElementById('screen').dataset.state === 'live');

      // A parent on a phone; a teacher at a computer, who sees the moderation buttons.
      const phone = await open('phone', '/?stream=camera', { name: 'Mamá de Sofía', ...phoneSize });
      const desktop = await open('desktop', '/?stream=camera', { as: 'staff', name: 'Profe Lucía' });
      // The chat is the room's: everyone who speaks here watches the main camera.
      const family = await open('family', '/?stream=camera', { name: 'Papá de Tomás' });
      const grandpa = await open('grandpa', '/?stream=aula', { name: 'Abuelo Luis' }); // watching the broadcast
      const say = async (page, color, text) => {
        await until(page, 'the chat', () => !document.getElementById('chat-send').disabled);
        await page.fill('#chat-color', color);
        await page.fill('#chat-message', text);
        await page.press('#chat-message', 'Enter');
        await until(page, 'the echo', (t) => [...document.querySelectorAll('.msg-text')].some((e) => e.textContent === t), text);
      };
      await say(desktop, '#0f8a7e', '¡Buenos días, familias! Hoy pintamos con témperas.');
      await say(phone, '#c2410c', '¡Qué lindo! Sofía estaba feliz esta mañana.');
      await say(family, '#4f46e5', '¿A qué hora salen al parque?');
      await say(desktop, '#0f8a7e', 'A las 11:30, si no llueve.');
      await say(phone, '#c2410c', 'Gracias por contarnos.');
      for (const page of [phone, desktop]) {
        await page.evaluate(() => document.activeElement?.blur());
        await page.mouse.move(0, 0);
        await until(page, 'the picker', () => !document.getElementById('picker').hidden);
        await nextPicture(page, null, 'a live picture');
        await until(page, 'all five messages', () => document.querySelectorAll('#messages .msg').length === 5);
      }
      await phone.screenshot({ path: path.join(DOCS, 'viewer-phone.png') });
      await desktop.screenshot({ path: path.join(DOCS, 'viewer-desktop.png') });
      await until(teacher, 'a viewer on the broadcaster', () => Number(document.getElementById('viewers').textContent) >= 1);
      await teacher.mouse.move(0, 0);
      await teacher.screenshot({ path: path.join(DOCS, 'broadcaster.png') });
      await grandpa.context().close();

      // The director's page: three families, one of them watching.
      const admin = await open('director-shot', '/admin', { as: 'admin', name: 'Directora Marta', viewport: { width: 1280, height: 900 } });
      const perez = await addFamily(admin, 'Familia Pérez', { rooms: ['camera', 'aula'] });
      await addFamily(admin, 'Familia Gómez', { rooms: ['camera'], max: 2 });
      await addFamily(admin, 'Familia Rojas', { rooms: ['camera', 'patio'] });
      await admin.click('#invite-close');
      const martin = await familyDevice('martin', perez, 'Papá de Martín');
      await nextPicture(martin, null, "the Pérez family's picture");
      await until(admin, 'the Pérez family watching', () =>
        [...document.querySelectorAll('.viewer-name')].some((e) => e.textContent === 'Papá de Martín'),
      );
      await admin.reload();
      await until(admin, 'the viewing log', () => !document.getElementById('log-table').hidden);
      await until(admin, 'who is watching', () => document.querySelectorAll('.viewer').length >= 3);
      await admin.mouse.move(0, 0);
      await admin.screenshot({ path: path.join(DOCS, 'admin.png'), fullPage: true });
      for (const file of ['login.png', 'viewer-phone.png', 'viewer-desktop.png', 'broadcaster.png', 'admin.png']) {
        const png = readFileSync(path.join(DOCS, file));
        assert(png.length > 10_000 && png.readUInt32BE(0) === 0x89504e47, `${file} is a PNG`);
      }
    });
  } finally {
    await browser.close().catch(() => {});
    await daemon.kill();
    prototypeSite.server.close();
  }
}

const guard = setTimeout(() => {
  console.log(`# the run took longer than ${RUN_LIMIT_MS / 1000} s`);
  while (results.length < TESTS) results.push(false);
  daemon.child?.kill('SIGKILL');
  process.exit(finish() || 1);
}, RUN_LIMIT_MS);

let code;
try {
  await main();
  code = finish();
} catch (error) {
  console.log(`not ok - setup: ${String(error.stack || error).split('\n').slice(0, 3).join('\n  ')}`);
  while (results.length < TESTS) results.push(false);
  code = finish();
}
clearTimeout(guard);
log.end();
if (code === 0) rmSync(work, { recursive: true, force: true });
process.exit(code);
