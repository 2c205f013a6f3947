// Link tokens on the admin page: the list (name, scope, rooms, last use), a form
// that makes one, the token shown once with ready-to-copy URLs for Home
// Assistant, OctoPrint or an <img> tag, and revoking one (confirmed inside its
// card, like a family's). Everything goes through the admin API
// (GET/POST /api/tokens, DELETE /api/tokens/ID) with the session's CSRF token;
// names come from the network and go into the page as text, never as markup.

import { t, currentLang } from './i18n.js';
import { byId, authedFetch, SessionEnded } from './common.js';

const ROOM_RE = /^[a-z0-9_-]{1,32}$/;
const MAX_NAME_CHARS = 64;

const form = byId('token-form');
const formError = byId('token-error');
const nameInput = byId('token-name');
const scopeSelect = byId('token-scope');
const roomsInput = byId('token-rooms');
const roomsField = byId('token-rooms-field');
const list = byId('token-list');
const empty = byId('tokens-empty');
const shown = byId('token-shown');

let config = null;
let tokens = [];
/** The token just made, shown until closed: { token, secret }. */
let fresh = null;
let saving = false;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(className, text) {
  const b = el('button', className, text);
  b.type = 'button';
  return b;
}

function dateTime(unixS) {
  return new Date(unixS * 1000).toLocaleString(currentLang(), { dateStyle: 'medium', timeStyle: 'short' });
}

/** One call to the tokens API; throws an Error with the server's reason (and `field`). */
async function api(method, path, body) {
  const init = { method, headers: {} };
  if (method !== 'GET') {
    if (config?.csrf) init.headers['X-CSRF-Token'] = config.csrf;
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body ?? {});
  }
  let reply;
  try {
    reply = await authedFetch(path, 'application/json', init);
  } catch (error) {
    if (error instanceof SessionEnded) throw error;
    throw Object.assign(new Error(t('admin.err.network')), { field: null });
  }
  if (reply.status === 204) return null;
  if (reply.ok) return reply.json();
  const answer = await reply.json().catch(() => ({}));
  throw Object.assign(new Error(t('admin.err.server', { msg: String(answer.error || `HTTP ${reply.status}`) })), {
    field: answer.field ?? null,
  });
}

// ---- the list ---------------------------------------------------------------------

function card(token) {
  const item = el('li', 'card family token');
  item.dataset.id = token.id;
  const head = el('div', 'family-head');
  head.append(el('h3', 'family-name'), el('p', 'token-scope'));
  const rooms = el('ul', 'family-rooms');
  const facts = el('p', 'family-facts');
  facts.append(el('span', 'token-created'), el('span', 'family-seen'));
  const tools = el('div', 'family-tools');
  const revoke = button('button small danger-outline');
  revoke.dataset.action = 'revoke';
  tools.append(revoke);
  item.append(head, rooms, facts, tools);
  return item;
}

function fill(item, token) {
  item.querySelector('.family-name').textContent = token.name;
  item.querySelector('.token-scope').textContent = t(`tokens.scope.${token.scope}`);
  const rooms = item.querySelector('.family-rooms');
  rooms.replaceChildren(...token.rooms.map((room) => el('li', 'room-tag', room)));
  rooms.hidden = token.rooms.length === 0;
  item.querySelector('.token-created').textContent = t('tokens.created', { when: dateTime(token.created) });
  item.querySelector('.family-seen').textContent = token.last_used
    ? t('tokens.lastUsed', { when: dateTime(token.last_used) })
    : t('tokens.neverUsed');
  const revoke = item.querySelector('[data-action=revoke]');
  revoke.textContent = t('admin.revoke');
  revoke.setAttribute('aria-label', t('tokens.revokeLabel', { name: token.name }));
  const strip = item.querySelector('.confirm');
  if (strip) labelConfirm(strip, token);
}

export function renderTokens() {
  if (!config) return;
  const cards = new Map([...list.children].map((li) => [li.dataset.id, li]));
  const ordered = tokens.map((token) => {
    const item = cards.get(token.id) || card(token);
    fill(item, token);
    return item;
  });
  // Move only what moved, so focus and an open confirmation survive a reload.
  ordered.forEach((item, i) => {
    if (list.children[i] !== item) list.insertBefore(item, list.children[i] || null);
  });
  while (list.children.length > ordered.length) list.lastElementChild.remove();
  empty.hidden = tokens.length > 0;
  renderForm();
  renderShown();
}

export async function loadTokens() {
  tokens = await api('GET', '/api/tokens');
  renderTokens();
}

// ---- revoking, confirmed inside the card ---------------------------------------------

function labelConfirm(strip, token) {
  strip.querySelector('.confirm-text').textContent = t('tokens.confirmRevoke', { name: token.name });
  strip.querySelector('.confirm-yes').textContent = t('admin.doRevoke');
  strip.querySelector('.confirm-no').textContent = t('admin.cancel');
}

function closeConfirm(strip, refocus) {
  const item = strip.closest('.token');
  strip.remove();
  if (refocus) item?.querySelector('[data-action=revoke]')?.focus();
}

function openConfirm(item) {
  for (const open of list.querySelectorAll('.confirm')) closeConfirm(open, false);
  const token = tokens.find((x) => x.id === item.dataset.id);
  if (!token) return;
  const strip = el('div', 'confirm revoke');
  strip.setAttribute('role', 'group');
  const text = el('p', 'confirm-text');
  text.id = `confirm-${token.id}`;
  strip.setAttribute('aria-labelledby', text.id);
  const buttons = el('span', 'confirm-buttons');
  const yes = button('button small danger confirm-yes');
  buttons.append(yes, button('button small confirm-no'));
  strip.append(text, buttons);
  labelConfirm(strip, token);
  item.append(strip);
  yes.focus();
}

async function revoke(item, strip) {
  const token = tokens.find((x) => x.id === item.dataset.id);
  if (!token) return;
  for (const b of strip.querySelectorAll('button')) b.disabled = true;
  try {
    await api('DELETE', `/api/tokens/${encodeURIComponent(token.id)}`);
    tokens = tokens.filter((x) => x.id !== token.id);
    if (fresh?.token.id === token.id) fresh = null;
    renderTokens();
    formError.hidden = true;
    byId('admin-note').textContent = t('tokens.revoked', { name: token.name });
    byId('admin-note').hidden = false;
  } catch (error) {
    if (error instanceof SessionEnded) return;
    for (const b of strip.querySelectorAll('button')) b.disabled = false;
    strip.querySelector('.confirm-text').textContent = error.message;
  }
}

list.addEventListener('click', (event) => {
  const target = event.target.closest('button');
  const item = target?.closest('.token');
  if (!item) return;
  const strip = target.closest('.confirm');
  if (target.dataset.action === 'revoke') openConfirm(item);
  else if (target.classList.contains('confirm-yes')) revoke(item, strip);
  else if (target.classList.contains('confirm-no')) closeConfirm(strip, true);
});

list.addEventListener('keydown', (event) => {
  const strip = event.target.closest?.('.confirm');
  if (!strip) return;
  if (event.key === 'Escape') {
    event.preventDefault();
    closeConfirm(strip, true);
  }
});

// ---- making one ------------------------------------------------------------------------

function renderForm() {
  for (const option of scopeSelect.options) option.textContent = t(`tokens.scope.${option.value}`);
  // A metrics token has no rooms; the others need at least one.
  roomsField.hidden = scopeSelect.value === 'metrics';
  byId('token-rooms-hint').textContent = t(scopeSelect.value === 'push' ? 'tokens.roomsHintPush' : 'tokens.roomsHint');
}

function showError(text, input) {
  formError.textContent = text;
  formError.hidden = false;
  for (const field of [nameInput, roomsInput]) field.removeAttribute('aria-invalid');
  if (input) {
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  }
}

function readForm() {
  const name = nameInput.value.trim();
  if (!name || [...name].length > MAX_NAME_CHARS) {
    showError(t('tokens.err.name', { max: MAX_NAME_CHARS }), nameInput);
    return null;
  }
  const scope = scopeSelect.value;
  const body = { name, scope };
  if (scope !== 'metrics') {
    const rooms = roomsInput.value.split(',').map((r) => r.trim()).filter(Boolean);
    const bad = rooms.find((r) => !ROOM_RE.test(r));
    if (rooms.length === 0 || bad !== undefined) {
      showError(bad !== undefined ? t('admin.err.room', { room: bad }) : t('tokens.err.rooms'), roomsInput);
      return null;
    }
    body.rooms = rooms;
  }
  return body;
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (saving) return;
  formError.hidden = true;
  const body = readForm();
  if (!body) return;
  saving = true;
  try {
    const made = await api('POST', '/api/tokens', body);
    const { token: secret, ...token } = made;
    tokens = [...tokens, token];
    fresh = { token, secret };
    form.reset();
    roomsInput.value = config.default_stream;
    renderTokens();
    shown.scrollIntoView({ block: 'nearest' });
    byId('token-shown-value').focus();
  } catch (error) {
    if (error instanceof SessionEnded) return;
    const input = error.field === 'name' ? nameInput : error.field?.startsWith('rooms') ? roomsInput : null;
    showError(error.message, input);
  } finally {
    saving = false;
  }
});

scopeSelect.addEventListener('change', renderForm);

// ---- the token, shown once -----------------------------------------------------------------

/** What to paste where: each line is a label and a value to copy. */
function examples(token, secret) {
  const origin = window.location.origin;
  const q = encodeURIComponent(secret);
  if (token.scope === 'metrics') {
    return [
      [t('tokens.ex.metrics'), `${origin}/metrics`],
      [t('tokens.ex.bearer'), `Authorization: Bearer ${secret}`],
    ];
  }
  if (token.scope === 'push') {
    const ws = config.ws_url || `${window.location.protocol === 'https:' ? 'wss' : 'ws'}://${window.location.hostname}:${config.ws_port}`;
    return token.rooms.map((room) => [t('tokens.ex.push', { room }), `${ws}/upload/${room}?token=${q}`]);
  }
  return token.rooms.flatMap((room) => {
    const stream = room === config.default_stream ? '' : `stream=${encodeURIComponent(room)}&`;
    return [
      [t('tokens.ex.mjpeg', { room }), `${origin}/stream.mjpg?${stream}token=${q}`],
      [t('tokens.ex.snapshot', { room }), `${origin}/snapshot.jpg?${stream}token=${q}`],
    ];
  });
}

function copyRow(label, value, id) {
  const row = el('div', 'token-copy');
  const field = el('input', 'token-value');
  field.type = 'text';
  field.readOnly = true;
  field.value = value;
  field.spellcheck = false;
  if (id) field.id = id;
  const labelEl = el('label', '', label);
  labelEl.htmlFor = field.id || (field.id = `token-copy-${Math.random().toString(36).slice(2)}`);
  const copy = button('button small', t('tokens.copy'));
  copy.addEventListener('click', async () => {
    field.select();
    try {
      await navigator.clipboard.writeText(value);
      copy.textContent = t('tokens.copied');
    } catch {
      // Without clipboard access (plain http on another host) the text stays selected to copy by hand.
      copy.textContent = t('tokens.selected');
    }
  });
  field.addEventListener('focus', () => field.select());
  row.append(labelEl, field, copy);
  return row;
}

/** What the shown card was last drawn for, so a poll does not redraw it under the cursor. */
let drawn = '';

function renderShown() {
  shown.hidden = !fresh;
  const box = byId('token-shown-body');
  const key = fresh ? `${fresh.token.id} ${currentLang()}` : '';
  if (key === drawn) return;
  drawn = key;
  if (!fresh) {
    box.replaceChildren();
    return;
  }
  const { token, secret } = fresh;
  byId('token-shown-title').textContent = t('tokens.shownTitle', { name: token.name });
  box.replaceChildren(
    copyRow(t('tokens.token'), secret, 'token-shown-value'),
    ...examples(token, secret).map(([label, value]) => copyRow(label, value)),
  );
}

byId('token-shown-close').addEventListener('click', () => {
  fresh = null;
  renderShown();
  nameInput.focus();
});

/** Starts the section: `config` is the page's /config.json. */
export async function startTokens(pageConfig) {
  config = pageConfig;
  roomsInput.value = config.default_stream;
  await loadTokens();
}
