// The director's page (/admin, the admin role only): families (add, edit,
// revoke, a new code), the printable invite with its QR code, link tokens for
// other apps (tokens.js), each room's
// opening hours, who is watching now per room, and the viewing log with its CSV
// download. Everything goes
// through the admin API (src/http/api.rs); every change carries the session's
// CSRF token from /config.json. Names come from the network and go into the
// page as text, never as markup.

import { t, num, currentLang, translate, onLanguage, languageToggle } from './i18n.js';
import { byId, authedFetch, loadConfig, showAccount, SessionEnded } from './common.js';
import { startMaskEditor } from './masks.js';
import { startTokens, loadTokens, renderTokens } from './tokens.js';

/** Who is watching changes by the second; families' counts with it. */
const POLL_MS = 4000;
const ROOM_RE = /^[a-z0-9_-]{1,32}$/;
const MAX_NAME_CHARS = 64;
const MAX_DEVICES = 20;
const DEFAULT_MAX_DEVICES = 3;
/** Rows the log table shows; the CSV has every one. */
const MAX_LOG_ROWS = 1000;
const LOG_DAYS = 7;

const pageError = byId('admin-error');
const form = byId('family-form');
const formTitle = byId('family-form-title');
const formError = byId('family-error');
const nameInput = byId('family-name');
const roomChoices = byId('room-choices');
const roomExtra = byId('room-extra');
const maxInput = byId('family-max');
const submitButton = byId('family-submit');
const cancelButton = byId('family-cancel');
const familyList = byId('family-list');
const familiesEmpty = byId('families-empty');
const invite = byId('invite');
const inviteQr = byId('invite-qr');
const watchingBox = byId('watching');
const watchingEmpty = byId('watching-empty');
const watchingCount = byId('watching-count');
const logForm = byId('log-form');
const logFrom = byId('log-from');
const logTo = byId('log-to');
const logCsv = byId('log-csv');
const logError = byId('log-error');
const logSummary = byId('log-summary');
const logTable = byId('log-table');
const logRows = byId('log-rows');

const FIELD_ERRORS = {
  name: { input: nameInput, box: byId('family-name-error') },
  rooms: { input: roomExtra, box: byId('family-rooms-error') },
  max_devices: { input: maxInput, box: byId('family-max-error') },
};

let config = null;
/** id -> family, as GET /api/families last said. */
let families = new Map();
/** Rooms worth offering as checkboxes: every stream the server knows, and every family's. */
let knownRooms = [];
/** The family being edited, or null when the form adds one. */
let editing = null;
let saving = false;
/** The invite on show: { name, code }, kept so a language switch can redo its words. */
let invited = null;
let inviteQrUrl = null;
let viewers = [];
/** The log as last loaded, newest first, or null before the first load. */
let logRecords = null;
let pollTimer = 0;

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

/** "camera" is the server's own camera: it gets the viewer page's friendly name. */
function roomLabel(room) {
  return room === config?.default_stream ? `${t('viewer.mainCamera')} (${room})` : room;
}

function dateTime(unixS) {
  return new Date(unixS * 1000).toLocaleString(currentLang(), { dateStyle: 'medium', timeStyle: 'short' });
}

function time(unixS) {
  const at = new Date(unixS * 1000);
  const today = new Date().toDateString() === at.toDateString();
  return today
    ? at.toLocaleTimeString(currentLang(), { hour: '2-digit', minute: '2-digit' })
    : dateTime(unixS);
}

// ---- talking to the server --------------------------------------------------

/** An answer the page cannot use; `field` names the form field at fault, if any. */
class ApiError extends Error {
  constructor(status, message, field = null) {
    super(message);
    Object.assign(this, { status, field });
  }
}

/**
 * One admin API call. Changes carry the CSRF token (a session's; Basic-auth
 * logins have none and need none) and JSON. Answers the parsed JSON, the blob of
 * an image, or null for 204.
 */
async function api(method, path, body) {
  const init = { method, headers: {} };
  if (method !== 'GET') {
    if (config?.csrf) init.headers['X-CSRF-Token'] = config.csrf;
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body ?? {});
  }
  let reply;
  try {
    reply = await authedFetch(path, path === '/api/qr' ? 'image/svg+xml' : 'application/json', init);
  } catch (error) {
    if (error instanceof SessionEnded) throw error;
    throw new ApiError(0, t('admin.err.network'));
  }
  if (reply.status === 204) return null;
  const type = reply.headers.get('Content-Type') || '';
  if (reply.ok) return type.startsWith('image/') ? reply.blob() : reply.json();
  let answer = {};
  if (type.includes('json')) answer = await reply.json().catch(() => ({}));
  throw new ApiError(reply.status, String(answer.error || `HTTP ${reply.status}`), answer.field ?? null);
}

/** Shows what went wrong at the top of the page; a dead session is already on its way to /login. */
function showPageError(error) {
  if (error instanceof SessionEnded) return;
  pageError.textContent = error.status ? t('admin.err.server', { msg: error.message }) : error.message;
  pageError.hidden = false;
}

function hidePageError() {
  pageError.hidden = true;
  pageError.textContent = '';
}

/** A short note that a change went through, in the polite live region. */
let noteTimer = 0;
function note(text) {
  const box = byId('admin-note');
  box.textContent = text;
  box.hidden = false;
  clearTimeout(noteTimer);
  noteTimer = setTimeout(() => {
    box.hidden = true;
    box.textContent = '';
  }, 8000);
}

// ---- families ------------------------------------------------------------------

async function loadFamilies() {
  const list = await api('GET', '/api/families');
  families = new Map(list.map((f) => [f.id, f]));
  renderFamilies();
}

/** Fills the room checkboxes; answers every room known (streams and families' rooms). */
async function loadRooms() {
  try {
    const reply = await authedFetch('/stats.json');
    if (reply.ok) {
      const stats = await reply.json();
      const names = (stats.streams || []).map((s) => String(s.name));
      knownRooms = [...new Set([...knownRooms, ...names])];
    }
  } catch (error) {
    if (error instanceof SessionEnded) throw error;
    // the free field still takes any room
  }
  for (const family of families.values()) {
    knownRooms = [...new Set([...knownRooms, ...family.rooms])];
  }
  knownRooms.sort((a, b) => (a === config.default_stream ? -1 : b === config.default_stream ? 1 : a.localeCompare(b)));
  renderRoomChoices();
  return [...knownRooms];
}

/** The checkboxes: one per known room, keeping what is ticked. */
function renderRoomChoices() {
  const ticked = new Set(checkedRooms());
  const fresh = roomChoices.children.length === 0;
  roomChoices.replaceChildren(
    ...knownRooms.map((room) => {
      const label = el('label', 'room-choice');
      const box = el('input');
      box.type = 'checkbox';
      box.name = 'room';
      box.value = room;
      box.checked = ticked.has(room) || (fresh && !editing && room === config.default_stream);
      label.append(box, el('span', '', roomLabel(room)));
      return label;
    }),
  );
}

function checkedRooms() {
  return [...roomChoices.querySelectorAll('input[type=checkbox]:checked')].map((b) => b.value);
}

function familyCard(family) {
  const item = el('li', 'card family');
  item.dataset.id = family.id;
  const head = el('div', 'family-head');
  head.append(el('h3', 'family-name'), el('p', 'family-watching'));
  const rooms = el('ul', 'family-rooms');
  const facts = el('p', 'family-facts');
  facts.append(el('span', 'family-devices'), el('span', 'family-seen'));
  const tools = el('div', 'family-tools');
  for (const action of ['edit', 'rotate', 'revoke']) {
    const b = button(`button small ${action === 'revoke' ? 'danger-outline' : ''}`.trim());
    b.dataset.action = action;
    tools.append(b);
  }
  item.append(head, rooms, facts, tools);
  return item;
}

/** Fills a card in; called again on every poll, so an open confirmation stays put. */
function fillCard(item, family) {
  item.querySelector('.family-name').textContent = family.name;
  const watching = item.querySelector('.family-watching');
  watching.textContent = t('admin.watchingN', { n: num(family.watching) });
  watching.classList.toggle('live', family.watching > 0);
  const rooms = item.querySelector('.family-rooms');
  const labels = family.rooms.map(roomLabel);
  if ([...rooms.children].map((li) => li.textContent).join('\n') !== labels.join('\n')) {
    rooms.replaceChildren(...labels.map((label) => el('li', 'room-tag', label)));
  }
  item.querySelector('.family-devices').textContent =
    family.max_devices === 1 ? t('admin.devices.one') : t('admin.devices.many', { n: num(family.max_devices) });
  item.querySelector('.family-seen').textContent = family.last_seen
    ? t('admin.lastSeen', { when: dateTime(family.last_seen) })
    : t('admin.never');
  for (const b of item.querySelectorAll('.family-tools button')) {
    const action = b.dataset.action;
    b.textContent = t(`admin.${action}`);
    b.setAttribute('aria-label', t(`admin.${action}Label`, { name: family.name }));
  }
  const strip = item.querySelector('.confirm');
  if (strip) labelConfirm(strip, family);
}

function renderFamilies() {
  const sorted = [...families.values()].sort((a, b) => a.name.localeCompare(b.name, currentLang()));
  const cards = new Map([...familyList.children].map((li) => [li.dataset.id, li]));
  const ordered = sorted.map((family) => {
    const item = cards.get(family.id) || familyCard(family);
    fillCard(item, family);
    return item;
  });
  // Move only what moved, so focus and open confirmations survive a poll.
  ordered.forEach((item, i) => {
    if (familyList.children[i] !== item) familyList.insertBefore(item, familyList.children[i] || null);
  });
  for (const [id, item] of cards) if (!families.has(id)) item.remove();
  familiesEmpty.hidden = families.size > 0;
  if (editing && !families.has(editing)) resetForm();
}

// ---- confirmations (inside the card, like the chat's moderation) ----------------

function labelConfirm(strip, family) {
  const action = strip.dataset.action;
  strip.querySelector('.confirm-text').textContent = t(action === 'revoke' ? 'admin.confirmRevoke' : 'admin.confirmRotate', {
    name: family.name,
  });
  strip.querySelector('.confirm-yes').textContent = t(action === 'revoke' ? 'admin.doRevoke' : 'admin.doRotate');
  strip.querySelector('.confirm-no').textContent = t('admin.cancel');
}

function closeConfirm(strip, refocus) {
  if (!strip) return;
  const item = strip.closest('li');
  strip.remove();
  if (refocus) item?.querySelector(`.family-tools [data-action="${strip.dataset.action}"]`)?.focus();
}

function openConfirm(item, action) {
  for (const open of familyList.querySelectorAll('.confirm')) closeConfirm(open, false);
  const family = families.get(item.dataset.id);
  if (!family) return;
  const strip = el('div', `confirm ${action}`);
  strip.dataset.action = action;
  strip.setAttribute('role', 'group');
  const text = el('p', 'confirm-text');
  text.id = `confirm-${family.id}`;
  strip.setAttribute('aria-labelledby', text.id);
  const buttons = el('span', 'confirm-buttons');
  const yes = button('button small confirm-yes');
  if (action === 'revoke') yes.classList.add('danger');
  buttons.append(yes, button('button small confirm-no'));
  strip.append(text, buttons);
  item.append(strip);
  labelConfirm(strip, family);
  strip.scrollIntoView({ block: 'nearest' });
  yes.focus();
}

async function confirmed(item, action, strip) {
  const family = families.get(item.dataset.id);
  if (!family) return;
  for (const b of strip.querySelectorAll('button')) b.disabled = true;
  hidePageError();
  try {
    if (action === 'revoke') {
      await api('DELETE', `/api/families/${encodeURIComponent(family.id)}`);
      closeConfirm(strip, false);
      families.delete(family.id);
      renderFamilies();
      if (invited?.id === family.id) closeInvite();
      note(t('admin.revoked', { name: family.name }));
    } else {
      const { code } = await api('POST', `/api/families/${encodeURIComponent(family.id)}/code`);
      closeConfirm(strip, false);
      note(t('admin.rotated', { name: family.name }));
      await showInvite(family, code);
    }
  } catch (error) {
    closeConfirm(strip, true);
    if (error.status === 404) {
      showPageError(new ApiError(0, t('admin.err.gone')));
    } else {
      showPageError(error);
    }
  }
  refresh();
}

familyList.addEventListener('click', (event) => {
  const target = event.target.closest('button');
  const item = target?.closest('li.family');
  if (!item) return;
  const strip = target.closest('.confirm');
  if (target.dataset.action === 'edit') {
    startEdit(item.dataset.id);
  } else if (target.dataset.action) {
    openConfirm(item, target.dataset.action);
  } else if (target.classList.contains('confirm-yes')) {
    confirmed(item, strip.dataset.action, strip);
  } else if (target.classList.contains('confirm-no')) {
    closeConfirm(strip, true);
  }
});

familyList.addEventListener('keydown', (event) => {
  const strip = event.target.closest?.('.confirm');
  if (strip && event.key === 'Escape') {
    event.preventDefault();
    closeConfirm(strip, true);
  }
});

// ---- the form: add a family, or edit one ----------------------------------------

function renderForm() {
  const family = editing ? families.get(editing) : null;
  formTitle.textContent = family ? t('admin.editTitle', { name: family.name }) : t('admin.addTitle');
  submitButton.textContent = saving ? t('admin.saving') : t(family ? 'admin.save' : 'admin.add');
  submitButton.disabled = saving;
  cancelButton.hidden = !family;
}

function clearErrors() {
  formError.hidden = true;
  formError.textContent = '';
  for (const { input, box } of Object.values(FIELD_ERRORS)) {
    input.removeAttribute('aria-invalid');
    input.removeAttribute('aria-errormessage');
    box.hidden = true;
    box.textContent = '';
  }
}

/** Puts `text` beside the field the server (or our own check) named. */
function fieldError(field, text) {
  const key = String(field).startsWith('rooms') ? 'rooms' : field;
  const target = FIELD_ERRORS[key];
  if (!target) {
    formError.textContent = text;
    formError.hidden = false;
    return;
  }
  target.box.textContent = text;
  target.box.hidden = false;
  target.input.setAttribute('aria-invalid', 'true');
  target.input.setAttribute('aria-errormessage', target.box.id);
  target.input.focus();
}

function resetForm() {
  editing = null;
  form.reset();
  maxInput.value = String(DEFAULT_MAX_DEVICES);
  for (const box of roomChoices.querySelectorAll('input')) box.checked = box.value === config.default_stream;
  clearErrors();
  renderForm();
}

function startEdit(id) {
  const family = families.get(id);
  if (!family) return;
  editing = id;
  clearErrors();
  knownRooms = [...new Set([...knownRooms, ...family.rooms])];
  renderRoomChoices();
  nameInput.value = family.name;
  maxInput.value = String(family.max_devices);
  roomExtra.value = '';
  for (const box of roomChoices.querySelectorAll('input')) box.checked = family.rooms.includes(box.value);
  renderForm();
  form.scrollIntoView({ block: 'start', behavior: 'smooth' });
  nameInput.focus({ preventScroll: true });
}

/** What the form says, checked the way the server checks it; null after showing the first problem. */
function readForm() {
  const name = nameInput.value.trim();
  const chars = Array.from(name).length;
  if (chars < 1 || chars > MAX_NAME_CHARS) {
    fieldError('name', t('admin.err.name'));
    return null;
  }
  const extra = roomExtra.value
    .split(/[\s,;]+/)
    .map((r) => r.trim())
    .filter(Boolean);
  const bad = extra.find((r) => !ROOM_RE.test(r));
  if (bad !== undefined) {
    fieldError('rooms', t('admin.err.room', { room: bad }));
    return null;
  }
  const rooms = [...new Set([...checkedRooms(), ...extra])];
  if (!rooms.length) {
    fieldError('rooms', t('admin.err.rooms'));
    return null;
  }
  const max = Number(maxInput.value);
  if (!Number.isInteger(max) || max < 1 || max > MAX_DEVICES) {
    fieldError('max_devices', t('admin.err.max'));
    return null;
  }
  return { name, rooms, max_devices: max };
}

/** The server's 400 in the reader's words where we have them, beside its field. */
function serverFieldError(error) {
  const field = String(error.field || '');
  const words = {
    name: t('admin.err.name'),
    max_devices: t('admin.err.max'),
  };
  if (field.startsWith('rooms[')) {
    fieldError('rooms', t('admin.err.server', { msg: error.message }));
  } else if (field in words) {
    fieldError(field, words[field]);
  } else {
    fieldError(field, t('admin.err.server', { msg: error.message }));
  }
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (saving) return;
  clearErrors();
  hidePageError();
  const body = readForm();
  if (!body) return;
  saving = true;
  renderForm();
  const id = editing;
  try {
    if (id) {
      const family = await api('PATCH', `/api/families/${encodeURIComponent(id)}`, body);
      families.set(family.id, family);
      note(t('admin.saved', { name: family.name }));
      resetForm();
    } else {
      const family = await api('POST', '/api/families', body);
      const { code, ...listed } = family;
      families.set(listed.id, listed);
      resetForm();
      note(t('admin.added', { name: listed.name }));
      await showInvite(listed, code);
    }
    knownRooms = [...new Set([...knownRooms, ...body.rooms])];
    renderRoomChoices();
    renderFamilies();
  } catch (error) {
    if (error.status === 400) {
      serverFieldError(error);
    } else if (error.status === 404) {
      showPageError(new ApiError(0, t('admin.err.gone')));
      resetForm();
    } else if (!(error instanceof SessionEnded)) {
      formError.textContent = error.status ? t('admin.err.server', { msg: error.message }) : error.message;
      formError.hidden = false;
    }
  } finally {
    saving = false;
    renderForm();
  }
  refresh();
});

cancelButton.addEventListener('click', resetForm);

for (const { input } of Object.values(FIELD_ERRORS)) {
  input.addEventListener('input', () => {
    const key = Object.keys(FIELD_ERRORS).find((k) => FIELD_ERRORS[k].input === input);
    const { box } = FIELD_ERRORS[key];
    input.removeAttribute('aria-invalid');
    box.hidden = true;
  });
}
roomChoices.addEventListener('change', () => {
  roomExtra.removeAttribute('aria-invalid');
  FIELD_ERRORS.rooms.box.hidden = true;
});

// ---- the invite -------------------------------------------------------------------
// The login link carries the code in its fragment (#code=...): browsers never
// send a fragment to the server, so no log on the way keeps it. login.js reads it.

function loginLink(code) {
  return `${location.origin}/login#code=${encodeURIComponent(code)}`;
}

function renderInvite() {
  if (!invited) return;
  byId('invite-family').textContent = invited.name;
  byId('invite-code').textContent = invited.code;
  byId('invite-page').textContent = `${location.origin}/login`;
  byId('invite-link').textContent = loginLink(invited.code);
}

async function showInvite(family, code) {
  invited = { id: family.id, name: family.name, code };
  renderInvite();
  if (inviteQrUrl) URL.revokeObjectURL(inviteQrUrl);
  inviteQrUrl = null;
  inviteQr.hidden = true;
  inviteQr.removeAttribute('src');
  invite.hidden = false;
  invite.scrollIntoView({ block: 'start', behavior: 'smooth' });
  byId('invite-print').focus({ preventScroll: true });
  try {
    const svg = await api('POST', '/api/qr', { text: loginLink(code) });
    if (invited?.code !== code) return; // another invite came meanwhile
    inviteQrUrl = URL.createObjectURL(svg);
    inviteQr.src = inviteQrUrl;
    inviteQr.hidden = false;
  } catch (error) {
    showPageError(error.status ? new ApiError(0, t('admin.err.qr')) : error);
  }
}

function closeInvite() {
  invited = null;
  invite.hidden = true;
  for (const id of ['invite-family', 'invite-code', 'invite-page', 'invite-link']) byId(id).textContent = '';
  if (inviteQrUrl) URL.revokeObjectURL(inviteQrUrl);
  inviteQrUrl = null;
  inviteQr.hidden = true;
  inviteQr.removeAttribute('src');
}

byId('invite-print').addEventListener('click', () => window.print());
byId('invite-close').addEventListener('click', () => {
  closeInvite();
  nameInput.focus();
});

// ---- who is watching now -------------------------------------------------------

function whoLabel(viewer) {
  const name = viewer.name ? String(viewer.name) : t('admin.noName');
  if (viewer.kind === 'token') return { name, detail: t('admin.viaToken') };
  if (viewer.family) {
    const family = families.get(viewer.family);
    // The log keeps the name the family had when it watched, even after it left.
    const known = family ? family.name : viewer.family_name;
    return { name, detail: known ? String(known) : t('admin.goneFamily') };
  }
  const role = ['staff', 'admin', 'viewer'].includes(viewer.role) ? viewer.role : 'viewer';
  return { name, detail: t(`admin.role.${role}`) };
}

function renderViewers() {
  const rooms = new Map();
  for (const viewer of viewers) {
    if (!rooms.has(viewer.stream)) rooms.set(viewer.stream, []);
    rooms.get(viewer.stream).push(viewer);
  }
  const names = [...rooms.keys()].sort((a, b) =>
    a === config.default_stream ? -1 : b === config.default_stream ? 1 : a.localeCompare(b),
  );
  watchingBox.replaceChildren(
    ...names.map((room) => {
      const group = el('section', 'card room-group');
      group.dataset.room = room;
      const list = rooms.get(room).sort((a, b) => a.since - b.since);
      const head = el('h3', 'room-head');
      head.append(el('span', 'room-name', roomLabel(room)), el('span', 'count', num(list.length)));
      const ul = el('ul', 'viewer-list');
      for (const viewer of list) {
        const { name, detail } = whoLabel(viewer);
        const li = el('li', 'viewer');
        li.append(el('span', 'viewer-name', name), el('span', 'viewer-detail', detail), el('span', 'viewer-since', t('admin.since', { time: time(viewer.since) })));
        ul.append(li);
      }
      group.append(head, ul);
      return group;
    }),
  );
  watchingEmpty.hidden = viewers.length > 0;
  watchingCount.textContent = viewers.length ? `(${num(viewers.length)})` : '';
}

async function loadViewers() {
  viewers = await api('GET', '/api/viewers');
  renderViewers();
}

// ---- the viewing log --------------------------------------------------------------

function dayInput(date) {
  const two = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${two(date.getMonth() + 1)}-${two(date.getDate())}`;
}

/** The range in UNIX seconds: from the first day's midnight to the end of the last day, local time. */
function logRange() {
  const [fy, fm, fd] = logFrom.value.split('-').map(Number);
  const [ty, tm, td] = logTo.value.split('-').map(Number);
  if (!fy || !ty) return null;
  const since = Math.floor(new Date(fy, fm - 1, fd).getTime() / 1000);
  const until = Math.floor(new Date(ty, tm - 1, td + 1).getTime() / 1000) - 1;
  return since <= until ? { since, until } : null;
}

function updateCsvLink() {
  const range = logRange();
  logCsv.href = range ? `/api/audit?since=${range.since}&until=${range.until}&format=csv` : '/api/audit?format=csv';
  logCsv.download = `kindercam-${logFrom.value || 'log'}-${logTo.value || ''}.csv`.replace(/-\.csv$/, '.csv');
}

function renderLog() {
  if (!logRecords) return;
  const shown = logRecords.slice(0, MAX_LOG_ROWS);
  logRows.replaceChildren(
    ...shown.map((record) => {
      const row = el('tr', record.kind === 'pause' ? 'pause' : '');
      const who = whoLabel(record);
      const pauseUntil = record.kind === 'pause' && record.until != null ? time(record.until) : '';
      const family =
        record.kind === 'pause'
          ? record.resumed_by
            ? t('admin.pauseResumed', { until: pauseUntil, who: record.resumed_by })
            : t('admin.pauseRow', { until: pauseUntil })
          : record.family || record.kind === 'token'
            ? who.detail
            : t(`admin.role.${['staff', 'admin', 'viewer'].includes(record.role) ? record.role : 'viewer'}`);
      const open = record.kind === 'pause' ? 'admin.stillPaused' : 'admin.stillWatching';
      row.append(
        el('td', 'when', dateTime(record.start)),
        el('td', `when ${record.end == null ? 'open' : ''}`.trim(), record.end == null ? t(open) : dateTime(record.end)),
        el('td', '', who.name),
        el('td', '', family),
        el('td', '', roomLabel(record.stream)),
        el('td', 'address', String(record.address ?? '')),
      );
      return row;
    }),
  );
  logTable.hidden = shown.length === 0;
  // Pauses are rows of the log too, but not viewing sessions: counted apart.
  const pauses = logRecords.filter((r) => r.kind === 'pause').length;
  const n = logRecords.length - pauses;
  const total = logRecords.length;
  const sessions =
    total > shown.length
      ? t('admin.logCapped', { shown: num(shown.length), n: num(total) })
      : n === 0
        ? t('admin.logNone')
        : n === 1
          ? t('admin.logCount.one')
          : t('admin.logCount.many', { n: num(n) });
  const paused = pauses === 0 ? '' : pauses === 1 ? t('admin.logPauses.one') : t('admin.logPauses.many', { n: num(pauses) });
  logSummary.textContent = paused ? `${sessions} ${paused}` : sessions;
}

async function loadLog() {
  logError.hidden = true;
  const range = logRange();
  if (!range) {
    logError.textContent = t('admin.err.dates');
    logError.hidden = false;
    logFrom.setAttribute('aria-invalid', 'true');
    return;
  }
  logFrom.removeAttribute('aria-invalid');
  updateCsvLink();
  try {
    const records = await api('GET', `/api/audit?since=${range.since}&until=${range.until}`);
    logRecords = records.reverse();
    renderLog();
  } catch (error) {
    if (error instanceof SessionEnded) return;
    logError.textContent = error.status ? t('admin.err.server', { msg: error.message }) : error.message;
    logError.hidden = false;
  }
}

logForm.addEventListener('submit', (event) => {
  event.preventDefault();
  loadLog();
});
for (const input of [logFrom, logTo]) input.addEventListener('change', updateCsvLink);

// ---- opening hours ---------------------------------------------------------------

/** The API's day names, Monday first, as the schedule writes them. */
const DAY_KEYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];
/** HH:MM on a 24-hour clock; 24:00 only ends a period (the server says so if not). */
const TIME_RE = /^(?:[01]?\d|2[0-3]):[0-5]\d$|^24:00$/;
const MAX_PERIODS = 32;
const hoursForm = byId('hours-form');
const hoursRoomSelect = byId('hours-room');
const hoursState = byId('hours-state');
const hoursError = byId('hours-error');
const hoursZone = byId('hours-zone');
const hoursPeriodsBox = byId('hours-periods');
const hoursDatesList = byId('hours-dates');
const hoursDateInput = byId('hours-date');

/** The room whose hours are on show, and whether it has none (always open). */
let hoursRoom = null;
let hoursAlways = true;
let hoursSaving = false;
/** Closed dates as YYYY-MM-DD, sorted. */
let hoursDates = [];

function browserZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || '';
  } catch {
    return '';
  }
}

function fillZoneChoices() {
  let zones = [];
  try {
    zones = Intl.supportedValuesOf('timeZone');
  } catch {
    // an older browser: the free field still takes any zone
  }
  byId('hours-zones').replaceChildren(
    ...zones.map((zone) => {
      const option = el('option');
      option.value = zone;
      return option;
    }),
  );
}

function minutes(text) {
  const [h, m] = text.split(':').map(Number);
  return h * 60 + m;
}

/** One period's row: its days, from, to and a remove button. */
function periodRow(period, index) {
  const row = el('div', 'hours-period');
  row.setAttribute('role', 'group');
  row.setAttribute('aria-label', `${t('hours.periods')} ${index + 1}`);
  const days = el('div', 'hours-days');
  days.setAttribute('role', 'group');
  days.setAttribute('aria-label', t('hours.days'));
  for (const key of DAY_KEYS) {
    const label = el('label', 'room-choice day-choice');
    const box = el('input');
    box.type = 'checkbox';
    box.value = key;
    box.checked = period.days.includes(key);
    label.append(box, el('span', '', t(`hours.day.${key}`)));
    days.append(label);
  }
  const times = el('div', 'hours-times');
  for (const [name, value] of [['from', period.from], ['to', period.to]]) {
    const label = el('label', 'hours-time');
    const input = el('input');
    input.type = 'text';
    input.name = name;
    input.value = value;
    input.inputMode = 'numeric';
    input.autocomplete = 'off';
    input.maxLength = 5;
    input.placeholder = name === 'from' ? '07:30' : '16:30';
    label.append(el('span', '', t(`hours.${name}`)), input);
    times.append(label);
  }
  const remove = button('button small danger-outline hours-remove', '×');
  remove.title = t('hours.removePeriod');
  remove.setAttribute('aria-label', t('hours.removePeriod'));
  remove.addEventListener('click', () => {
    const periods = readPeriods();
    periods.splice(index, 1);
    renderPeriods(periods);
  });
  times.append(remove);
  row.append(days, times);
  return row;
}

/** The periods as the form holds them now. */
function readPeriods() {
  return [...hoursPeriodsBox.querySelectorAll('.hours-period')].map((row) => ({
    days: [...row.querySelectorAll('input[type=checkbox]:checked')].map((b) => b.value),
    from: row.querySelector('input[name=from]').value.trim(),
    to: row.querySelector('input[name=to]').value.trim(),
  }));
}

function renderPeriods(periods) {
  hoursPeriodsBox.replaceChildren(...periods.map(periodRow));
  byId('hours-add-period').disabled = periods.length >= MAX_PERIODS;
}

function renderDates() {
  if (hoursDates.length === 0) {
    hoursDatesList.replaceChildren(el('li', 'hint', t('hours.noDates')));
    return;
  }
  hoursDatesList.replaceChildren(
    ...hoursDates.map((date) => {
      const item = el('li', 'hours-date');
      const shown = new Date(`${date}T12:00:00`).toLocaleDateString(currentLang(), { dateStyle: 'medium' });
      const remove = button('chip hours-date-remove', `${shown} ×`);
      remove.setAttribute('aria-label', t('hours.removeDate', { date: shown }));
      remove.addEventListener('click', () => {
        hoursDates = hoursDates.filter((d) => d !== date);
        renderDates();
      });
      item.append(remove);
      return item;
    }),
  );
}

function renderHoursState() {
  hoursState.textContent = hoursRoom === null ? t('hours.noRooms') : t(hoursAlways ? 'hours.stateAlways' : 'hours.stateHours');
  hoursState.classList.toggle('hours-has', !hoursAlways);
}

function renderHoursRooms() {
  const chosen = hoursRoomSelect.value || hoursRoom;
  hoursRoomSelect.replaceChildren(
    ...knownRooms.map((room) => {
      const option = el('option', '', roomLabel(room));
      option.value = room;
      return option;
    }),
  );
  if (chosen && knownRooms.includes(chosen)) hoursRoomSelect.value = chosen;
}

/** Shows a room's hours as GET /api/streams/NAME/schedule answered them. */
function showHours(schedule) {
  hoursAlways = schedule === null;
  hoursError.hidden = true;
  // Always open: the form starts from a usual school day, ready to save.
  const shown = schedule ?? {
    timezone: browserZone(),
    open: [{ days: DAY_KEYS.slice(0, 5), from: '07:30', to: '16:30' }],
    closed_dates: [],
  };
  hoursZone.value = shown.timezone;
  hoursDates = [...shown.closed_dates].sort();
  renderPeriods(shown.open);
  renderDates();
  renderHoursState();
}

async function loadHours() {
  hoursRoom = hoursRoomSelect.value || null;
  if (hoursRoom === null) {
    renderHoursState();
    return;
  }
  try {
    showHours(await api('GET', `/api/streams/${encodeURIComponent(hoursRoom)}/schedule`));
  } catch (error) {
    showHoursError(error);
  }
}

function showHoursError(error, focus = null) {
  if (error instanceof SessionEnded) return;
  hoursError.textContent = error.status ? t('admin.err.server', { msg: error.message }) : error.message;
  hoursError.hidden = false;
  if (focus) focus.focus();
}

/** The form field a refusal names (`timezone`, `open[1].from`, `closed_dates[0]`). */
function hoursFieldInput(field) {
  if (!field) return null;
  if (field === 'timezone') return hoursZone;
  const period = /^open\[(\d+)\]\.(from|to|days)/.exec(field);
  if (period) {
    const row = hoursPeriodsBox.querySelectorAll('.hours-period')[Number(period[1])];
    if (!row) return null;
    return period[2] === 'days' ? row.querySelector('input[type=checkbox]') : row.querySelector(`input[name=${period[2]}]`);
  }
  if (field.startsWith('closed_dates')) return hoursDateInput;
  return null;
}

/** The schedule the form describes, or an error naming what to fix. */
function readHours() {
  const timezone = hoursZone.value.trim();
  if (!timezone) return { error: t('hours.err.zone'), focus: hoursZone };
  const open = readPeriods();
  const rows = hoursPeriodsBox.querySelectorAll('.hours-period');
  for (const [i, period] of open.entries()) {
    if (period.days.length === 0) return { error: t('hours.err.days'), focus: rows[i].querySelector('input') };
    for (const name of ['from', 'to']) {
      if (!TIME_RE.test(period[name])) {
        return { error: t('hours.err.time'), focus: rows[i].querySelector(`input[name=${name}]`) };
      }
    }
    if (minutes(period.from) >= minutes(period.to)) {
      return { error: t('hours.err.order'), focus: rows[i].querySelector('input[name=to]') };
    }
  }
  return { schedule: { timezone, open, closed_dates: hoursDates } };
}

async function saveHours(schedule) {
  if (hoursSaving || hoursRoom === null) return;
  hoursSaving = true;
  hoursError.hidden = true;
  const room = hoursRoom;
  const path = `/api/streams/${encodeURIComponent(room)}/schedule`;
  try {
    if (schedule) {
      showHours(await api('PUT', path, schedule));
      note(t('hours.saved', { room: roomLabel(room) }));
    } else {
      await api('DELETE', path);
      showHours(null);
      note(t('hours.opened', { room: roomLabel(room) }));
    }
  } catch (error) {
    showHoursError(error, error.status === 400 ? hoursFieldInput(error.field) : null);
  } finally {
    hoursSaving = false;
  }
}

hoursForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const read = readHours();
  if (read.error) {
    showHoursError(new ApiError(0, read.error), read.focus);
    return;
  }
  saveHours(read.schedule);
});
byId('hours-always').addEventListener('click', () => saveHours(null));
byId('hours-add-period').addEventListener('click', () => {
  const periods = readPeriods();
  periods.push({ days: DAY_KEYS.slice(0, 5), from: '07:30', to: '16:30' });
  renderPeriods(periods);
  hoursPeriodsBox.lastElementChild?.querySelector('input[name=from]')?.focus();
});
byId('hours-add-date').addEventListener('click', () => {
  const date = hoursDateInput.value;
  if (!date) return;
  hoursDates = [...new Set([...hoursDates, date])].sort();
  hoursDateInput.value = '';
  renderDates();
});
hoursRoomSelect.addEventListener('change', loadHours);

// ---- keeping it fresh ----------------------------------------------------------

let refreshing = false;
async function refresh() {
  if (refreshing) return;
  refreshing = true;
  try {
    await Promise.all([loadFamilies(), loadViewers(), loadTokens()]);
  } catch (error) {
    showPageError(error);
  } finally {
    refreshing = false;
  }
}

function schedule() {
  clearInterval(pollTimer);
  pollTimer = 0;
  if (document.hidden) return;
  pollTimer = setInterval(refresh, POLL_MS);
}

// A hidden tab asks nothing; back in view, it catches up at once.
document.addEventListener('visibilitychange', () => {
  schedule();
  if (!document.hidden) refresh();
});

// ---- start -----------------------------------------------------------------------

async function main() {
  translate();
  languageToggle(byId('lang-toggle'));
  try {
    config = await loadConfig();
  } catch (error) {
    if (!(error instanceof SessionEnded)) showPageError(new ApiError(0, t('admin.err.network')));
    return;
  }
  showAccount(config);
  const today = new Date();
  logTo.value = dayInput(today);
  logFrom.value = dayInput(new Date(today.getFullYear(), today.getMonth(), today.getDate() - (LOG_DAYS - 1)));
  updateCsvLink();
  onLanguage(() => {
    document.title = t('admin.pageTitle');
    renderForm();
    renderRoomChoices();
    renderFamilies();
    renderInvite();
    renderViewers();
    renderLog();
    renderHoursRooms();
    renderPeriods(readPeriods());
    renderDates();
    renderHoursState();
    renderTokens();
  });
  let streams = [];
  try {
    await loadFamilies();
    streams = await loadRooms();
    startMaskEditor(config, streams);
    resetForm();
    fillZoneChoices();
    renderHoursRooms();
    await loadHours();
    await startTokens(config);
    await loadViewers();
  } catch (error) {
    showPageError(error);
  }
  loadLog();
  schedule();
}

main();
