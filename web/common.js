// What the pages share: the server's settings, WebSocket addresses, the top
// bar's account, and a socket that reconnects by itself with backoff after a
// Wi-Fi drop or a server restart.

import { t } from './i18n.js';

/** The element with this id; a missing one is a bug in the markup, so say so. */
export function byId(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`missing #${id}`);
  return el;
}

export function load(key, fallback) {
  try {
    return localStorage.getItem(key) ?? fallback;
  } catch {
    return fallback;
  }
}

export function save(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // private mode: forgotten on reload, nothing else breaks
  }
}

const RETURN_KEY = 'kindercam.return';

/** Thrown by `authedFetch` when the session is gone; the page is already on its way to /login. */
export class SessionEnded extends Error {}

let leaving = false;

/**
 * The session ended (logout elsewhere, a changed code, expiry, or a server
 * that forgot it): log in again, then come back to this very page.
 */
function sessionEnded() {
  if (leaving) return;
  leaving = true;
  try {
    sessionStorage.setItem(RETURN_KEY, location.pathname + location.search);
  } catch {
    // without storage the login lands on the viewer page, which is fine too
  }
  location.assign('/login?session=ended');
}

/**
 * Fetches one of the server's private resources with this browser's session
 * (a GET, unless `init` says otherwise: the admin page's changes).
 *
 * Why not a plain fetch: without a session the server answers a script's request
 * with 401 and `WWW-Authenticate: Basic` (for VLC and scripts), and a browser
 * then opens its own password dialog over the page, which parents must never
 * see. A request that also accepts HTML gets the server's redirect to /login
 * instead; it is not followed, only noticed.
 */
export async function authedFetch(path, accept = 'application/json', init = {}) {
  const reply = await fetch(path, {
    cache: 'no-store',
    redirect: 'manual',
    ...init,
    headers: { Accept: `${accept}, text/html;q=0.1`, ...init.headers },
  });
  if (reply.type === 'opaqueredirect' || reply.status === 401) {
    sessionEnded();
    throw new SessionEnded(`${path}: not logged in`);
  }
  return reply;
}

/**
 * GET /config.json: role, name, auth, ws_port, ws_url, default_stream,
 * interval_ms, width, height, quality, now_unix_ms... To that it adds
 * `clockOffsetMs`, the server's clock minus this device's, judged at the middle
 * of the request, and `clockErrorMs`, half the request's round trip: how far off
 * that can be.
 */
export async function loadConfig() {
  const sent = Date.now();
  const reply = await authedFetch('/config.json');
  if (!reply.ok) throw new Error(`/config.json: HTTP ${reply.status}`);
  const config = await reply.json();
  const received = Date.now();
  if (typeof config.now_unix_ms === 'number') {
    config.clockOffsetMs = config.now_unix_ms - (sent + received) / 2;
    config.clockErrorMs = (received - sent) / 2;
  }
  return config;
}

/**
 * Where to go after logging in: the page whose session ended, if it was one of
 * ours, else null. Read once: a later visit to / stays on /.
 */
export function takeReturn() {
  let path = null;
  try {
    path = sessionStorage.getItem(RETURN_KEY);
    sessionStorage.removeItem(RETURN_KEY);
  } catch {
    return null;
  }
  // Only a path on this server: never "//elsewhere", "/\\elsewhere" or "https://...".
  return path && /^\/(?![/\\])/.test(path) && !path.startsWith('/login') ? path : null;
}

/**
 * The signed-in person in the top bar (with their family, for a family login),
 * and the logout form beside it. Shown only for a login session: Basic-auth and
 * auth-off clients have nothing to log out of. The director also gets the way
 * to the admin page, whatever the login. `config` is /config.json.
 */
export function showAccount(config) {
  const toAdmin = document.getElementById('to-admin');
  if (toAdmin) toAdmin.hidden = !(config?.auth && config.admin === true);
  const box = document.getElementById('account');
  if (!box || !config?.auth || !config.name) return;
  const name = String(config.name);
  byId('account-name').textContent = name;
  const family = typeof config.family === 'string' && config.family ? config.family : '';
  const familyText = document.getElementById('account-family');
  if (familyText) {
    familyText.textContent = family;
    familyText.hidden = !family;
  }
  const avatar = byId('account-avatar');
  avatar.textContent = firstLetter(name);
  box.title = family ? `${name} · ${family}` : name;
  const role = byId('account-role');
  role.dataset.i18n = config.admin === true ? 'role.admin' : 'role.staff';
  role.textContent = t(role.dataset.i18n);
  role.hidden = !config.staff;
  box.hidden = false;
}

/** The first letter of a name, upper-cased, for the avatar ("mamá" -> "M", "🐻 Oso" -> "🐻"). */
function firstLetter(name) {
  const text = name.trim();
  if (typeof Intl.Segmenter === 'function') {
    const first = new Intl.Segmenter().segment(text)[Symbol.iterator]().next().value;
    return (first?.segment ?? '').toLocaleUpperCase();
  }
  return (Array.from(text)[0] ?? '').toLocaleUpperCase();
}

/**
 * ws://host:port/path for the host this page came from (wss: under https), or
 * below `ws_url` when the installer put the sockets behind a reverse proxy.
 */
export function wsUrl(config, path) {
  if (config.ws_url) return config.ws_url.replace(/\/+$/, '') + path;
  let host = location.hostname;
  if (host.includes(':') && !host.startsWith('[')) host = `[${host}]`; // bare IPv6
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  return `${scheme}://${host}:${config.ws_port}${path}`;
}

/**
 * A WebSocket to `path` that comes back after it drops: 0.5 s, 1 s, 2 s... up
 * to 10 s between tries, with jitter so a classroom of phones does not return
 * in lockstep after a server restart. The settings are fetched again before
 * every try, so a restarted server on another port is found too.
 */
export class Link {
  constructor({ path, binaryType = 'blob', onOpen, onMessage, onDown }) {
    Object.assign(this, { path, binaryType, onOpen, onMessage, onDown });
    this.ws = null;
    this.running = false;
    this.failures = 0;
    this.timer = 0;
    this.generation = 0;
    this.config = null;
    window.addEventListener('online', () => this.retryNow());
    // The OS knows the network is gone long before TCP does.
    window.addEventListener('offline', () => this.ws?.close());
  }

  get isOpen() {
    return this.ws?.readyState === WebSocket.OPEN;
  }

  start(path = this.path) {
    this.stop();
    this.path = path;
    this.running = true;
    this.failures = 0;
    this.connect();
  }

  stop(code = 1000) {
    this.running = false;
    this.generation += 1;
    clearTimeout(this.timer);
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(code);
      } catch {
        ws.close();
      }
    }
  }

  /** Drops the current socket (it looks stuck) and tries again at once. */
  restart() {
    if (!this.running) return;
    this.start(this.path);
  }

  /** When waiting between tries, try now (the network came back, the tab is visible). */
  retryNow() {
    if (this.running && !this.ws) {
      clearTimeout(this.timer);
      this.connect();
    }
  }

  send(data) {
    if (!this.isOpen) return false;
    this.ws.send(data);
    return true;
  }

  async connect() {
    const generation = ++this.generation;
    let url;
    try {
      this.config = await loadConfig();
      url = wsUrl(this.config, this.path);
    } catch {
      if (generation === this.generation) this.retryLater(null);
      return;
    }
    if (generation !== this.generation) return;
    const ws = new WebSocket(url);
    ws.binaryType = this.binaryType;
    this.ws = ws;
    let heard = false;
    ws.onopen = () => this.onOpen?.(this.config);
    ws.onmessage = (event) => {
      if (!heard) {
        heard = true;
        this.failures = 0; // the server is really serving us: start backoff afresh
      }
      this.onMessage?.(event);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.retryLater(event);
    };
  }

  retryLater(event) {
    const delay = Math.min(10_000, 500 * 2 ** this.failures) * (0.75 + Math.random() / 2);
    this.failures = Math.min(this.failures + 1, 10);
    const generation = this.generation;
    this.onDown?.(event); // may stop or restart this link itself
    if (this.running && generation === this.generation) {
      this.timer = setTimeout(() => this.connect(), delay);
    }
  }
}
