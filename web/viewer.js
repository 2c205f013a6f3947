// The viewer page: the live picture of one stream, its state, fullscreen,
// snapshot download and the stream picker. The chat lives in chat.js and
// follows the room being watched. A family's login sees only its own rooms,
// and is told plainly when its devices are all in use, or that the room is
// paused or closed (instead of the picture). Staff get the pause button.
// On a weak link the picture drops to half size by itself (quality.js).

import { t, age, translate, onLanguage, languageToggle } from './i18n.js';
import { byId, load, save, authedFetch, loadConfig, showAccount, takeReturn, Link, SessionEnded } from './common.js';
import { startChat } from './chat.js';
import { PauseControl, clockTime, dayAndTime } from './pause.js';
import { QualityGovernor } from './quality.js';

/** A live stream that sends nothing for this long is presumed stuck: reconnect. */
const STALL_MS = 15_000;
const STATS_EVERY_MS = 10_000;
const STREAM_KEY = 'kindercam.stream';
const NAME_RE = /^[a-z0-9_-]{1,32}$/;
/** The close code of a socket whose login ended or lost the room (the server's Goodbye::SESSION_ENDED). */
const CLOSE_SESSION_ENDED = 1008;

const screen = byId('screen');
const picture = byId('picture');
const stateText = byId('stage-state');
const ageText = byId('age');
const placeholderText = byId('placeholder-text');
const placeholderAge = byId('placeholder-age');
const picker = byId('picker');
const select = byId('stream-select');
const notice = byId('notice');
const fullscreenButton = byId('fullscreen');
const snapshotButton = byId('snapshot');
const retryButton = byId('retry');
const qualityButton = byId('quality');

let config = null;
let chat = null;
let streamName = null;
/** connecting | live | reconnecting | offline | refused | paused | closed */
let state = 'connecting';
/** While paused or closed: the server's status message (until, opens_at). */
let gateStatus = null;
/** Staff's pause button; null for families. */
let pause = null;
/** While refused: the family's device limit the server named. */
let deviceLimit = 0;
/** Why offline: 'offline' (the source left) or 'waiting' (never had one). */
let offlineWhy = 'offline';
let lastFrameAt = 0;
let stallTimer = 0;

/**
 * ?quality_test=1 (the browser tests): late judged over 2 s (held for 1 s),
 * not 5 s (held for 2 s), and back to full size after 3 s of timely frames, not 30.
 */
const QUALITY_TEST = new URLSearchParams(location.search).get('quality_test') === '1';
/** Whether this link needs half-size frames: fed every frame's arrival. */
const quality = new QualityGovernor(QUALITY_TEST ? { lateWindowMs: 2000, lateForMs: 1000, recoverMs: 3000 } : {});

const video = new Link({
  path: '/video',
  onOpen: (config) => {
    noteClock(config);
    quality.restart(); // the first frame is whatever the server held
  },
  onMessage: onVideoMessage,
  onDown: (event) => {
    setState(state === 'connecting' && !lastFrameAt ? 'connecting' : 'reconnecting');
    if (event?.code === CLOSE_SESSION_ENDED) checkAccess();
  },
});

/** The rooms this login may watch: a family's own, or null for every room. */
function allowedRooms() {
  return Array.isArray(config?.rooms) ? config.rooms.map(String) : null;
}

function mayWatch(name) {
  const rooms = allowedRooms();
  return !rooms || rooms.includes(name);
}

/**
 * The server closed the picture because the login ended or lost this room
 * (the director revoked the family, gave it a new code, or took the room
 * away). A dead session goes to the login page, which says so (authedFetch);
 * a lost room moves the page to a room the family still has.
 */
async function checkAccess() {
  try {
    config = await loadConfig();
  } catch {
    return; // SessionEnded is on its way to /login; a network error retries by itself
  }
  const rooms = allowedRooms();
  if (streamName && !mayWatch(streamName) && rooms?.length) {
    watch(rooms[0]);
    refreshStreams();
  }
}

// ---- the server's clock --------------------------------------------------
// Frames say when they were taken by the server's clock; this phone's clock may
// differ by seconds or minutes. /config.json, fetched before every connection,
// tells the difference (common.js), give or take half a round trip. A later
// estimate replaces an earlier one unless it is much less precise, or when the
// two cannot both be right: the phone's clock was set meanwhile.

let clock = null;

function noteClock(config) {
  if (typeof config?.clockOffsetMs !== 'number') return;
  const estimate = { offset: config.clockOffsetMs, error: config.clockErrorMs };
  const precise = !clock || estimate.error <= Math.max(2 * clock.error, 250);
  const moved = clock && Math.abs(estimate.offset - clock.offset) > estimate.error + clock.error + 1000;
  if (precise || moved) clock = estimate;
}

// ---- frames -------------------------------------------------------------
// Only the newest frame matters: while one decodes, later arrivals replace each
// other in `nextUrl`, and every blob URL is revoked once nothing shows it. Each
// frame keeps the capture time its meta message gave (null without one).

let shownUrl = null;
let loadingUrl = null;
let nextUrl = null;
let shownTakenAt = null;
let loadingTakenAt = null;
let nextTakenAt = null;
/** The capture time announced for the frame message that comes next. */
let announcedTakenAt = null;

function release(url) {
  if (url?.startsWith('blob:')) URL.revokeObjectURL(url);
}

function queueFrame(url) {
  release(nextUrl);
  nextUrl = url;
  nextTakenAt = announcedTakenAt;
  announcedTakenAt = null;
  if (!loadingUrl) showNext();
}

function showNext() {
  if (!nextUrl) return;
  loadingUrl = nextUrl;
  loadingTakenAt = nextTakenAt;
  nextUrl = null;
  picture.src = loadingUrl;
}

picture.addEventListener('load', () => {
  if (!loadingUrl) return;
  release(shownUrl);
  shownUrl = loadingUrl;
  shownTakenAt = loadingTakenAt;
  loadingUrl = null;
  picture.hidden = false;
  screen.classList.add('has-frame');
  lastFrameAt = Date.now();
  setState('live');
  watchForStall();
  showNext();
});

picture.addEventListener('error', () => {
  release(loadingUrl);
  loadingUrl = null;
  showNext();
});

function clearPicture() {
  for (const url of [shownUrl, loadingUrl, nextUrl]) release(url);
  shownUrl = loadingUrl = nextUrl = null;
  shownTakenAt = loadingTakenAt = nextTakenAt = announcedTakenAt = null;
  picture.removeAttribute('src');
  picture.hidden = true;
  screen.classList.remove('has-frame');
  lastFrameAt = 0;
}

function onVideoMessage(event) {
  const { data } = event;
  if (typeof data !== 'string') {
    noteArrival(announcedTakenAt);
    queueFrame(URL.createObjectURL(new Blob([data], { type: 'image/jpeg' })));
    return;
  }
  if (data.startsWith('data:')) {
    noteArrival(announcedTakenAt);
    queueFrame(data); // a server that only speaks text frames
    return;
  }
  let message;
  try {
    message = JSON.parse(data);
  } catch {
    return;
  }
  if (message?.type === 'gate') {
    pause?.update(message); // staff: the room's pause, while the picture goes on
    return;
  }
  if (message?.type === 'frame') {
    // Sent just before its frame (?meta=1): when the picture was taken.
    announcedTakenAt = Number.isFinite(message.ts) ? message.ts : null;
    return;
  }
  if (message?.type !== 'status') return;
  quality.restart(); // the frames to come are of another run of the stream
  if (message.state === 'refused') {
    refused(message);
    return;
  }
  if (message.state === 'paused' || message.state === 'closed') {
    // No frames until it opens: the notice replaces the picture.
    gateStatus = message;
    clearPicture();
    setState(message.state);
    return;
  }
  if (message.state === 'offline' || message.state === 'waiting') {
    offlineWhy = message.state;
    clearTimeout(stallTimer);
    setState('offline');
  }
  // "live" needs no action: the frame that follows it says so.
}

/**
 * The server turned this device away: every device the family may use is
 * watching already. Retrying by itself would only knock again and again, so
 * the page stops, says why with the limit, and offers a button to try again.
 */
function refused(message) {
  video.stop();
  clearPicture();
  if (message.reason === 'device_limit') {
    const limit = Number(message.limit);
    deviceLimit = Number.isInteger(limit) && limit > 0 ? limit : 0;
    setState('refused');
    retryButton.focus({ preventScroll: true });
  } else {
    // "session_ended": the family's access was withdrawn as this socket opened.
    checkAccess();
  }
}

retryButton.addEventListener('click', () => {
  if (streamName) watch(streamName);
});

function watchForStall() {
  clearTimeout(stallTimer);
  stallTimer = setTimeout(() => {
    if (state === 'live') video.restart();
  }, STALL_MS);
}

// ---- frame size -------------------------------------------------------------
// A weak link gets half-size frames (?size=small) until it has been timely for
// a while: quality.js decides from each frame's age on arrival (by the server's
// clock) and the frame rate. Switching only opens another socket, so the
// picture stays on screen meanwhile. A tap on the note asks for full size for good.

function noteArrival(takenAt) {
  const now = Date.now() + (clock?.offset ?? 0);
  if (quality.frame(now, clock ? takenAt : null)) switchSize();
}

function switchSize() {
  renderQuality();
  if (streamName && !document.hidden) video.start(videoPath(streamName));
}

function renderQuality() {
  qualityButton.hidden = quality.size !== 'small';
}

qualityButton.addEventListener('click', () => {
  quality.pinFull();
  switchSize();
});

// ---- state indicator ---------------------------------------------------

function setState(next) {
  if (next !== 'live') clearTimeout(stallTimer);
  state = next;
  render();
}

function render() {
  screen.dataset.state = state;
  const label = t(`state.${state}`);
  // Only a real change is announced to screen readers; the age is not live.
  if (stateText.textContent !== label) stateText.textContent = label;
  const detail = {
    connecting: 'viewer.connecting',
    reconnecting: 'viewer.reconnecting',
    offline: offlineWhy === 'waiting' ? 'viewer.waiting' : 'viewer.offline',
    live: 'viewer.connecting',
    refused: deviceLimit === 1 ? 'viewer.deviceLimit.one' : 'viewer.deviceLimit.many',
    paused: 'viewer.paused',
    closed: Number.isFinite(gateStatus?.opens_at) ? 'viewer.closed' : 'viewer.closedNever',
  }[state];
  placeholderText.textContent = t(detail, {
    n: deviceLimit,
    time: Number.isFinite(gateStatus?.until) ? clockTime(gateStatus.until) : '',
    when: Number.isFinite(gateStatus?.opens_at) ? dayAndTime(gateStatus.opens_at) : '',
  });
  retryButton.hidden = state !== 'refused';
  renderAge();
}

/**
 * How old the picture on screen is: from when it was taken, by the server's
 * clock, where the frame said so and the clock difference is known; else from
 * when it arrived.
 */
function pictureAge() {
  if (shownTakenAt !== null && clock) {
    return Math.max(0, Date.now() + clock.offset - shownTakenAt);
  }
  return Date.now() - lastFrameAt;
}

function renderAge() {
  const since = lastFrameAt ? age(pictureAge()) : '';
  ageText.textContent = since;
  placeholderAge.textContent =
    since && state !== 'live' ? t('viewer.lastSeen', { age: since }) : '';
}

setInterval(() => {
  if (!document.hidden) renderAge();
}, 1000);

// ---- streams -------------------------------------------------------------

function streamFromUrl() {
  const name = new URLSearchParams(location.search).get('stream');
  return name && NAME_RE.test(name) && mayWatch(name) ? name : null;
}

/**
 * Streams worth offering: a family's own rooms, all of them and only them;
 * for everyone else the default one, and any that has had frames or a broadcaster.
 */
async function listStreams() {
  const reply = await authedFetch('/stats.json');
  if (!reply.ok) throw new Error(`/stats.json: HTTP ${reply.status}`);
  const stats = await reply.json();
  const all = stats.streams || [];
  const rooms = allowedRooms();
  if (rooms) {
    return rooms.map((name) => all.find((s) => s.name === name) || { name, status: 'waiting' });
  }
  return all.filter((s) => s.name === config.default_stream || s.uploading || s.frames_published > 0);
}

function fillPicker(names) {
  if (streamName && !names.includes(streamName) && mayWatch(streamName)) names.push(streamName);
  const current = [...select.options].map((o) => o.value);
  if (current.join('\n') !== names.join('\n')) {
    select.replaceChildren(
      ...names.map((name) => {
        const option = document.createElement('option');
        option.value = name;
        return option;
      }),
    );
  }
  labelStreams();
  select.value = streamName;
  picker.hidden = names.length < 2;
}

/** The server's own camera gets a friendly name; broadcasts keep the name staff gave them. */
function labelStreams() {
  for (const option of select.options) {
    option.textContent = option.value === config?.default_stream ? t('viewer.mainCamera') : option.value;
  }
}

async function refreshStreams() {
  try {
    // A family's rooms can change while the page is open: ask again.
    if (allowedRooms()) config = await loadConfig();
    fillPicker((await listStreams()).map((s) => s.name));
  } catch (error) {
    if (error instanceof SessionEnded) return;
    // the video link shows the trouble; the picker just keeps its list
  }
}

function chooseStream(streams) {
  const names = streams.map((s) => s.name);
  const saved = load(STREAM_KEY, null);
  if (saved && names.includes(saved)) return saved;
  const live = streams.filter((s) => s.status === 'live' || s.uploading);
  const fallback = allowedRooms()?.[0] ?? config.default_stream;
  const preferred = live.find((s) => s.name === config.default_stream) || live[0] || { name: fallback };
  return preferred.name;
}

/**
 * Bare JPEGs, each announced with its capture time; staff also hear of pauses;
 * half-size frames while the link is weak.
 */
function videoPath(name) {
  return `/video/${name}?format=binary&meta=1${pause ? '&gate=1' : ''}${quality.size === 'small' ? '&size=small' : ''}`;
}

function watch(name) {
  streamName = name;
  deviceLimit = 0;
  gateStatus = null;
  pause?.follow(name);
  // The configured interval is the server's own camera's; a broadcast has its own.
  quality.setInterval(name === config?.default_stream ? Number(config.interval_ms) : null);
  quality.restart();
  clearPicture();
  offlineWhy = 'offline';
  setState('connecting');
  chat?.join(name);
  if (select.value !== name) select.value = name;
  const url = new URL(location.href);
  url.searchParams.set('stream', name);
  history.replaceState(null, '', url);
  if (!document.hidden) video.start(videoPath(name));
}

select.addEventListener('change', () => {
  save(STREAM_KEY, select.value);
  watch(select.value);
});

// Nobody looks at a hidden tab: stop downloading frames until it is back.
document.addEventListener('visibilitychange', () => {
  if (!streamName) return;
  if (document.hidden) {
    video.stop();
  } else {
    setState(lastFrameAt ? 'reconnecting' : 'connecting');
    video.start(videoPath(streamName));
    refreshStreams();
  }
});

// ---- fullscreen -----------------------------------------------------------
// iPhone Safari has no element fullscreen, so the picture then fills the
// window with CSS instead.

function nativeFullscreenElement() {
  return document.fullscreenElement || document.webkitFullscreenElement || null;
}

function isFullscreen() {
  return Boolean(nativeFullscreenElement()) || screen.classList.contains('pseudo-fullscreen');
}

function enterPseudo() {
  screen.classList.add('pseudo-fullscreen');
  document.body.classList.add('no-scroll');
  updateFullscreen();
}

function exitFullscreen() {
  if (nativeFullscreenElement()) {
    (document.exitFullscreen || document.webkitExitFullscreen).call(document);
  }
  screen.classList.remove('pseudo-fullscreen');
  document.body.classList.remove('no-scroll');
  updateFullscreen();
}

function enterFullscreen() {
  const request = screen.requestFullscreen || screen.webkitRequestFullscreen;
  if (!request) return enterPseudo();
  try {
    const pending = request.call(screen);
    if (pending?.catch) pending.catch(enterPseudo);
  } catch {
    enterPseudo();
  }
}

function updateFullscreen() {
  const on = isFullscreen();
  fullscreenButton.setAttribute('aria-pressed', String(on));
  fullscreenButton.title = t(on ? 'viewer.exitFullscreen' : 'viewer.fullscreen');
}

fullscreenButton.addEventListener('click', () => (isFullscreen() ? exitFullscreen() : enterFullscreen()));
document.addEventListener('fullscreenchange', updateFullscreen);
document.addEventListener('webkitfullscreenchange', updateFullscreen);
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && screen.classList.contains('pseudo-fullscreen')) exitFullscreen();
});

// ---- snapshot ----------------------------------------------------------------

let noticeTimer = 0;
function say(text, isError = false) {
  notice.textContent = text;
  notice.classList.toggle('error', isError);
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    notice.textContent = '';
  }, 6000);
}

function stamp(date = new Date()) {
  const two = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}${two(date.getMonth() + 1)}${two(date.getDate())}-${two(date.getHours())}${two(date.getMinutes())}${two(date.getSeconds())}`;
}

snapshotButton.addEventListener('click', async () => {
  snapshotButton.disabled = true;
  try {
    const reply = await authedFetch(`/snapshot.jpg?stream=${encodeURIComponent(streamName)}`, 'image/jpeg');
    if (!reply.ok) throw new Error(`HTTP ${reply.status}`);
    const url = URL.createObjectURL(await reply.blob());
    const link = document.createElement('a');
    link.href = url;
    link.download = `kindercam-${streamName}-${stamp()}.jpg`;
    document.body.append(link);
    link.click();
    link.remove();
    // The download has its own copy once it starts; a minute is plenty.
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    say(t('viewer.snapshotSaved'));
  } catch {
    say(t('viewer.snapshotFailed'), true);
  } finally {
    snapshotButton.disabled = false;
  }
});

// ---- start ---------------------------------------------------------------------

async function main() {
  translate();
  languageToggle(byId('lang-toggle'));
  onLanguage(() => {
    document.title = t('viewer.pageTitle');
    render();
    updateFullscreen();
    labelStreams();
    pause?.render();
  });
  for (;;) {
    try {
      config = await loadConfig();
      noteClock(config);
      break;
    } catch {
      // The server is not up yet: keep showing "connecting" and ask again.
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
  // Back to the page whose session ended, now that the login is done.
  const back = takeReturn();
  const here = location.pathname + location.search;
  if (back && back !== here && (config.staff === true || !back.startsWith('/camera'))) {
    location.replace(back);
    return;
  }
  // Staff get a way to the broadcaster. Without access control there are no
  // roles (everyone counts as staff), so the page shows the parents' view.
  byId('to-camera').hidden = !(config.auth && config.staff === true);
  showAccount(config);
  if (config.staff === true) pause = new PauseControl(byId('pause-panel'), config, byId('screen'));
  chat = startChat(config);
  let streams = [];
  try {
    streams = await listStreams();
  } catch {
    // start on the default stream; the picker fills in later
  }
  watch(streamFromUrl() || chooseStream(streams));
  fillPicker(streams.map((s) => s.name));
  setInterval(() => {
    if (!document.hidden) refreshStreams();
  }, STATS_EVERY_MS);
}

main();
