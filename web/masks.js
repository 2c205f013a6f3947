// The privacy-mask editor on the admin page: pick a room, draw rectangles over
// a live snapshot with a finger or a mouse, save. Rectangles are kept in
// fractions of the picture (0-1), as the API takes them
// (GET/PUT /api/streams/NAME/masks), so they survive a change of resolution.
// After a save the page fetches fresh snapshots: the server burns the masks into
// every frame before anyone sees it, so the picture then shows exactly what
// parents see (the black areas rounded out to whole JPEG blocks).

import { t, addStrings, onLanguage } from './i18n.js';
import { byId, authedFetch, SessionEnded } from './common.js';

addStrings({
  es: {
    'masks.title': 'Zonas tapadas',
    'masks.intro': 'Tapa en negro lo que nadie debe ver (el cambiador, la puerta del baño). Dibuja rectángulos sobre la imagen con el dedo o el ratón y guarda. Se tapan dentro de la cámara, antes de que nadie vea la imagen.',
    'masks.room': 'Sala',
    'masks.pictureAlt': 'Imagen actual de la sala, con las zonas tapadas',
    'masks.noPicture': 'Ahora no hay imagen de esta sala; puedes dibujar igualmente.',
    'masks.loading': 'Cargando…',
    'masks.count': '{n} de {max} zonas',
    'masks.none': 'Sin zonas tapadas.',
    'masks.unsaved': 'Cambios sin guardar.',
    'masks.saved': 'Guardado. La imagen muestra ahora lo que ven las familias.',
    'masks.cleared': 'Zonas quitadas. La imagen muestra ahora lo que ven las familias.',
    'masks.full': 'Como mucho {max} zonas por sala.',
    'masks.item': 'Zona {n}: {w} × {h} %, desde {x} %, {y} %',
    'masks.remove': 'Quitar',
    'masks.removeLabel': 'Quitar la zona {n}',
    'masks.save': 'Guardar zonas',
    'masks.undo': 'Deshacer',
    'masks.clear': 'Quitar todas',
    'masks.refresh': 'Nueva foto',
    'masks.error': 'No se pudo guardar: {msg}',
  },
  en: {
    'masks.title': 'Privacy masks',
    'masks.intro': 'Black out what nobody may see (the changing table, the toilet door). Draw rectangles over the picture with a finger or the mouse, then save. They are blacked out inside the camera, before anyone sees the picture.',
    'masks.room': 'Room',
    'masks.pictureAlt': 'The room now, with its masked areas',
    'masks.noPicture': 'There is no picture of this room right now; you can still draw.',
    'masks.loading': 'Loading…',
    'masks.count': '{n} of {max} areas',
    'masks.none': 'No masked areas.',
    'masks.unsaved': 'Unsaved changes.',
    'masks.saved': 'Saved. The picture now shows what families see.',
    'masks.cleared': 'Masks removed. The picture now shows what families see.',
    'masks.full': 'At most {max} areas per room.',
    'masks.item': 'Area {n}: {w} × {h} %, from {x} %, {y} %',
    'masks.remove': 'Remove',
    'masks.removeLabel': 'Remove area {n}',
    'masks.save': 'Save masks',
    'masks.undo': 'Undo',
    'masks.clear': 'Remove all',
    'masks.refresh': 'New picture',
    'masks.error': 'Could not save: {msg}',
  },
});

/** The server refuses more; the editor says so before it has to. */
const MAX_RECTS = 16;
/** A drag smaller than this (in fractions) is a tap, not a rectangle. */
const MIN_SIZE = 0.01;
/** While the section is on screen, the picture is this fresh. */
const PICTURE_MS = 3000;

const roomSelect = byId('mask-room');
const stage = byId('mask-stage');
const picture = byId('mask-picture');
const layer = byId('mask-layer');
const statusBox = byId('mask-status');
const list = byId('mask-list');
const saveButton = byId('mask-save');
const undoButton = byId('mask-undo');
const clearButton = byId('mask-clear');
const refreshButton = byId('mask-refresh');
const errorBox = byId('mask-error');

let config = null;
let room = null;
/** What the server has for `room`; `draft` is what the editor shows. */
let saved = [];
let draft = [];
/** The rectangle being drawn: its anchor and the pointer that draws it. */
let drawing = null;
let pictureUrl = null;
let pictureTimer = 0;
let statusKey = null;
let statusVars = {};
let busy = false;

const clamp = (v) => Math.min(1, Math.max(0, v));
const round = (v) => Math.round(v * 10000) / 10000;
const percent = (v) => String(Math.round(v * 1000) / 10);
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

function setStatus(key, vars = {}) {
  statusKey = key;
  statusVars = vars;
  statusBox.textContent = key ? t(key, vars) : '';
}

function showError(message) {
  errorBox.textContent = message ? t('masks.error', { msg: message }) : '';
  errorBox.hidden = !message;
}

async function call(method, body) {
  const init = { method, headers: {} };
  if (method !== 'GET') {
    if (config?.csrf) init.headers['X-CSRF-Token'] = config.csrf;
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const reply = await authedFetch(`/api/streams/${encodeURIComponent(room)}/masks`, 'application/json', init);
  const answer = await reply.json().catch(() => null);
  if (!reply.ok) throw new Error(String(answer?.error || `HTTP ${reply.status}`));
  return Array.isArray(answer) ? answer : [];
}

/** The point under a pointer event, in fractions of the picture. */
function pointAt(event) {
  const box = stage.getBoundingClientRect();
  return { x: clamp((event.clientX - box.left) / box.width), y: clamp((event.clientY - box.top) / box.height) };
}

function rectBetween(a, b) {
  return {
    x: round(Math.min(a.x, b.x)),
    y: round(Math.min(a.y, b.y)),
    w: round(Math.abs(a.x - b.x)),
    h: round(Math.abs(a.y - b.y)),
  };
}

function box(rect, className) {
  const node = document.createElement('div');
  node.className = className;
  Object.assign(node.style, {
    left: `${rect.x * 100}%`,
    top: `${rect.y * 100}%`,
    width: `${rect.w * 100}%`,
    height: `${rect.h * 100}%`,
  });
  return node;
}

function render() {
  const dirty = !same(draft, saved);
  // Saved areas are already black in the picture: outline them only, so the
  // picture shows the server's own masking. Unsaved ones are drawn as they will be.
  const boxes = draft.map((rect, i) => {
    const node = box(rect, dirty || !saved.some((s) => same(s, rect)) ? 'mask-rect draft' : 'mask-rect');
    node.textContent = String(i + 1);
    return node;
  });
  if (drawing?.rect) boxes.push(box(drawing.rect, 'mask-rect drawing'));
  layer.replaceChildren(...boxes);
  list.replaceChildren(
    ...draft.map((rect, i) => {
      const item = document.createElement('li');
      const label = document.createElement('span');
      label.textContent = t('masks.item', {
        n: i + 1,
        x: percent(rect.x),
        y: percent(rect.y),
        w: percent(rect.w),
        h: percent(rect.h),
      });
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.className = 'button';
      remove.textContent = t('masks.remove');
      remove.setAttribute('aria-label', t('masks.removeLabel', { n: i + 1 }));
      remove.addEventListener('click', () => {
        draft.splice(i, 1);
        changed();
      });
      item.append(label, remove);
      return item;
    }),
  );
  saveButton.disabled = busy || !dirty || !room;
  undoButton.disabled = busy || draft.length === 0;
  clearButton.disabled = busy || (draft.length === 0 && saved.length === 0);
  byId('mask-count').textContent = t('masks.count', { n: draft.length, max: MAX_RECTS });
}

/** What the status line says when nothing else is news: unsaved changes, or no masks. */
function restingStatus() {
  setStatus(same(draft, saved) ? (draft.length ? null : 'masks.none') : 'masks.unsaved');
}

function changed() {
  showError('');
  restingStatus();
  render();
}

/** The snapshot request on its way, if any; another waits for it (see loadPicture). */
let pictureLoad = null;
let pictureAgain = false;

/**
 * A fresh snapshot of the room; masked by the server like every frame. One at a
 * time: the server lets only one request wait for an idle camera's next frame
 * and answers a second at once with what it has (503 before the first frame).
 */
function loadPicture() {
  clearTimeout(pictureTimer);
  pictureTimer = 0;
  if (pictureLoad) {
    pictureAgain = true;
    return pictureLoad;
  }
  pictureLoad = fetchPicture().finally(() => {
    pictureLoad = null;
    if (pictureAgain) {
      pictureAgain = false;
      loadPicture();
    } else if (!document.hidden && room) {
      pictureTimer = setTimeout(loadPicture, PICTURE_MS);
    }
  });
  return pictureLoad;
}

async function fetchPicture() {
  if (!room) return;
  const asked = room;
  try {
    const reply = await authedFetch(`/snapshot.jpg?stream=${encodeURIComponent(asked)}`, 'image/jpeg');
    if (asked !== room) return;
    if (reply.ok) {
      const url = URL.createObjectURL(await reply.blob());
      await new Promise((resolve) => {
        picture.onload = resolve;
        picture.onerror = resolve;
        picture.src = url;
      });
      if (pictureUrl) URL.revokeObjectURL(pictureUrl);
      pictureUrl = url;
      // The layer's fractions are fractions of this very picture.
      if (picture.naturalWidth && picture.naturalHeight) {
        stage.style.aspectRatio = `${picture.naturalWidth} / ${picture.naturalHeight}`;
      }
      stage.classList.remove('no-picture');
      if (statusKey === 'masks.noPicture') restingStatus();
      stage.dataset.fresh = String(Date.now());
    } else {
      stage.classList.add('no-picture');
      setStatus('masks.noPicture');
    }
  } catch (error) {
    if (error instanceof SessionEnded) return;
    stage.classList.add('no-picture');
  }
}

async function openRoom(name) {
  room = name;
  saved = [];
  draft = [];
  drawing = null;
  showError('');
  setStatus('masks.loading');
  render();
  try {
    saved = await call('GET');
    if (room !== name) return;
    draft = saved.map((r) => ({ ...r }));
    setStatus(draft.length ? null : 'masks.none');
  } catch (error) {
    if (error instanceof SessionEnded) return;
    showError(error.message);
    setStatus(null);
  }
  render();
  loadPicture();
}

async function store(rects, doneKey) {
  busy = true;
  render();
  try {
    await call('PUT', rects);
    saved = await call('GET');
    draft = saved.map((r) => ({ ...r }));
    showError('');
    setStatus(doneKey);
    stage.dataset.saved = String(Date.now());
    // The next frame is masked: show it, and once more after a frame interval.
    await loadPicture();
    setTimeout(loadPicture, Math.max(300, (config?.interval_ms ?? 500) + 200));
  } catch (error) {
    if (!(error instanceof SessionEnded)) showError(error.message);
  } finally {
    busy = false;
    render();
  }
}

// ---- drawing: pointer events cover mouse, pen and touch alike ------------------

stage.addEventListener('pointerdown', (event) => {
  if (busy || !room || drawing || event.button > 0) return;
  if (draft.length >= MAX_RECTS) {
    setStatus('masks.full', { max: MAX_RECTS });
    return;
  }
  event.preventDefault();
  stage.setPointerCapture(event.pointerId);
  drawing = { id: event.pointerId, from: pointAt(event), rect: null };
});

stage.addEventListener('pointermove', (event) => {
  if (!drawing || event.pointerId !== drawing.id) return;
  drawing.rect = rectBetween(drawing.from, pointAt(event));
  render();
});

function endDrawing(event, keep) {
  if (!drawing || event.pointerId !== drawing.id) return;
  const rect = rectBetween(drawing.from, pointAt(event));
  drawing = null;
  if (keep && rect.w >= MIN_SIZE && rect.h >= MIN_SIZE) {
    draft.push(rect);
    changed();
  } else {
    render();
  }
}

stage.addEventListener('pointerup', (event) => endDrawing(event, true));
stage.addEventListener('pointercancel', (event) => endDrawing(event, false));

saveButton.addEventListener('click', () => store(draft, 'masks.saved'));
clearButton.addEventListener('click', () => store([], 'masks.cleared'));
undoButton.addEventListener('click', () => {
  draft.pop();
  changed();
});
refreshButton.addEventListener('click', loadPicture);
roomSelect.addEventListener('change', () => openRoom(roomSelect.value));

document.addEventListener('visibilitychange', () => {
  if (document.hidden) {
    clearTimeout(pictureTimer);
    pictureTimer = 0;
  } else {
    loadPicture();
  }
});

/** Fills the room list (the server's streams) and opens the first room. */
export async function startMaskEditor(pageConfig, rooms) {
  config = pageConfig;
  if (config?.width && config?.height) stage.style.aspectRatio = `${config.width} / ${config.height}`;
  onLanguage(() => {
    setStatus(statusKey, statusVars);
    render();
  });
  setRooms(rooms);
}

/** Offers these rooms; keeps the open one if it is still there. */
export function setRooms(rooms) {
  const names = [...new Set(rooms)];
  const keep = names.includes(room) ? room : names[0] ?? null;
  roomSelect.replaceChildren(
    ...names.map((name) => {
      const option = document.createElement('option');
      option.value = name;
      option.textContent = name === config?.default_stream ? `${t('viewer.mainCamera')} (${name})` : name;
      return option;
    }),
  );
  if (keep) roomSelect.value = keep;
  if (keep !== room) openRoom(keep);
}
