// The broadcaster page: opens a camera, draws it to a canvas at the chosen
// interval and sends each picture as a JPEG data URL to /upload/NAME. The next
// picture waits for the server's ack of the last one, so a slow link sends
// fewer pictures instead of piling them up. Hiding or closing the tab stops
// everything: the camera light goes off and the socket closes. While it
// broadcasts, the teacher holding the phone has the pause button for the room.

import { t, num, translate, onLanguage, languageToggle } from './i18n.js';
import { byId, load, save, loadConfig, showAccount, Link } from './common.js';
import { PauseControl } from './pause.js';

/** An upload unanswered for this long means a dead connection: reconnect. */
const ACK_TIMEOUT_MS = 15_000;
const NAME_RE = /^[a-z0-9_-]{1,32}$/;
const INTERVALS = [200, 500, 1000, 2000, 5000];
const SETTINGS = ['stream', 'camera', 'resolution', 'interval', 'quality'];

const form = byId('controls');
const screen = byId('screen');
const preview = byId('preview');
const stateText = byId('cam-state');
const startButton = byId('start');
const streamInput = byId('stream');
const cameraSelect = byId('camera');
const devicesGroup = byId('devices');
const resolutionSelect = byId('resolution');
const intervalSelect = byId('interval');
const qualityInput = byId('quality');
const qualityOut = byId('quality-out');
const errorBox = byId('cam-error');
const framesText = byId('frames-sent');
const sizeText = byId('frame-size');
const viewersText = byId('viewers');

const canvas = document.createElement('canvas');
const context = canvas.getContext('2d');

let config = null;
let media = null;
let running = false;
/** idle | starting | connecting | live | reconnecting */
let state = 'idle';
let awaitingAck = false;
let sendTimer = 0;
let ackTimer = 0;
let lastSentAt = 0;
let framesSent = 0;
/** Whether this run has had the stream: a later "busy" is our own old connection. */
let heldSlot = false;
/** The pause button for the stream being broadcast. */
let pause = null;

const link = new Link({
  path: '/upload/aula',
  binaryType: 'arraybuffer',
  onOpen: () => {
    awaitingAck = false;
    sendSoon(0);
  },
  onMessage,
  onDown: () => {
    awaitingAck = false;
    clearTimeout(sendTimer);
    clearTimeout(ackTimer);
    if (running) setState('reconnecting');
  },
});

// ---- display ------------------------------------------------------------------

function setState(next) {
  state = next;
  screen.dataset.state = next;
  stateText.textContent = t(`cam.state.${next}`);
  startButton.textContent = t(running ? 'cam.stop' : 'cam.start');
  startButton.classList.toggle('danger', running);
  streamInput.disabled = running;
}

function showError(text, isInfo = false) {
  errorBox.textContent = text;
  errorBox.classList.toggle('info', isInfo);
  errorBox.hidden = false;
}

function hideError() {
  errorBox.hidden = true;
  errorBox.textContent = '';
}

function renderStats(ack) {
  framesText.textContent = num(framesSent);
  if (ack) {
    sizeText.textContent = t('cam.kb', { n: num(ack.bytes / 1024, 1) });
    viewersText.textContent = num(ack.viewers);
  }
}

function fillIntervals(chosen) {
  const values = [...new Set([...INTERVALS, chosen])].sort((a, b) => a - b);
  intervalSelect.replaceChildren(
    ...values.map((ms) => {
      const option = document.createElement('option');
      option.value = String(ms);
      option.textContent = t('cam.intervalOption', { s: num(ms / 1000, 1) });
      return option;
    }),
  );
  intervalSelect.value = String(chosen);
}

// ---- camera ---------------------------------------------------------------

function resolution() {
  const [w, h] = resolutionSelect.value.split('x').map(Number);
  return { w, h };
}

function stopTracks() {
  for (const track of media?.getTracks() || []) track.stop();
  media = null;
  preview.srcObject = null;
  preview.hidden = true;
  screen.classList.remove('has-frame');
}

async function openCamera() {
  stopTracks(); // phones cannot open a second camera while one is on
  const { w, h } = resolution();
  const video = { width: { ideal: w }, height: { ideal: h } };
  const [kind, id] = cameraSelect.value.split(/:(.*)/s);
  if (kind === 'device') video.deviceId = { exact: id };
  else video.facingMode = { ideal: id };
  media = await navigator.mediaDevices.getUserMedia({ video, audio: false });
  preview.srcObject = media;
  preview.hidden = false;
  screen.classList.add('has-frame');
  preview.play().catch(() => {}); // autoplay muted is allowed; this only nudges Safari
  media.getVideoTracks()[0]?.addEventListener('ended', () => {
    if (running) {
      stop();
      showError(t('cam.err.camera', { msg: 'ended' }));
    }
  });
  await listDevices();
}

/** Device names are only known once the user has allowed the camera. */
async function listDevices() {
  let devices = [];
  try {
    devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === 'videoinput' && d.deviceId);
  } catch {
    return;
  }
  const chosen = cameraSelect.value;
  devicesGroup.replaceChildren(
    ...devices.map((device, i) => {
      const option = document.createElement('option');
      option.value = `device:${device.deviceId}`;
      option.textContent = device.label || t('cam.deviceN', { n: i + 1 });
      return option;
    }),
  );
  // An empty group would still show its label in Safari's picker.
  if (devices.length) cameraSelect.append(devicesGroup);
  else devicesGroup.remove();
  cameraSelect.value = chosen;
  if (cameraSelect.value !== chosen) cameraSelect.value = 'facing:environment';
}

function cameraError(error) {
  switch (error?.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return t('cam.err.denied');
    case 'NotFoundError':
    case 'OverconstrainedError':
      return t('cam.err.notFound');
    case 'NotReadableError':
      return t('cam.err.busyDevice');
    default:
      return t('cam.err.camera', { msg: error?.name || String(error) });
  }
}

// ---- sending -----------------------------------------------------------------

function sendSoon(delay) {
  clearTimeout(sendTimer);
  sendTimer = setTimeout(sendFrame, delay);
}

function sendFrame() {
  if (!running || !link.isOpen || awaitingAck) return;
  if (preview.readyState < 2 || !preview.videoWidth) {
    sendSoon(100); // the camera has not produced a picture yet
    return;
  }
  const { w, h } = resolution();
  const scale = Math.min(1, w / preview.videoWidth, h / preview.videoHeight);
  canvas.width = Math.round(preview.videoWidth * scale);
  canvas.height = Math.round(preview.videoHeight * scale);
  context.drawImage(preview, 0, 0, canvas.width, canvas.height);
  const dataUrl = canvas.toDataURL('image/jpeg', Number(qualityInput.value) / 100);
  if (config?.max_upload_bytes && dataUrl.length > config.max_upload_bytes) {
    showError(t('cam.err.tooBig'));
    sendSoon(Number(intervalSelect.value));
    return;
  }
  link.send(dataUrl);
  awaitingAck = true;
  lastSentAt = performance.now();
  clearTimeout(ackTimer);
  ackTimer = setTimeout(() => link.restart(), ACK_TIMEOUT_MS);
}

/** The next frame goes one interval after the last one, but never before its ack. */
function nextFrame() {
  awaitingAck = false;
  clearTimeout(ackTimer);
  const interval = Number(intervalSelect.value);
  sendSoon(Math.max(0, interval - (performance.now() - lastSentAt)));
}

function onMessage(event) {
  let msg;
  try {
    msg = JSON.parse(event.data);
  } catch {
    return;
  }
  const name = streamInput.value.trim();
  if (msg?.type === 'gate') {
    pause?.update(msg);
    return;
  }
  if (msg?.type === 'ack') {
    heldSlot = true;
    framesSent += 1;
    renderStats(msg);
    if (state !== 'live') {
      hideError();
      setState('live');
    }
    nextFrame();
  } else if (msg?.type === 'error') {
    switch (msg.code) {
      case 'busy':
        if (heldSlot) {
          // Our own previous connection (after a Wi-Fi drop) still holds the
          // stream on the server; it is released when the server notices.
          showError(t('cam.err.waitSlot', { name }), true);
        } else {
          stop();
          showError(t('cam.err.busy', { name }));
        }
        break;
      case 'reserved':
        stop();
        showError(t('cam.err.reserved', { name }));
        break;
      case 'refused':
        stop();
        showError(t('cam.err.server', { msg: String(msg.message ?? '') }));
        break;
      default: // bad_frame, too_large, internal: this picture was dropped, go on
        showError(t('cam.err.server', { msg: String(msg.message ?? '') }));
        nextFrame();
    }
  }
}

// ---- start / stop ----------------------------------------------------------------

function saveSettings() {
  for (const key of SETTINGS) save(`kindercam.cam.${key}`, form.elements[key].value);
}

async function start() {
  hideError();
  const name = streamInput.value.trim();
  streamInput.value = name;
  const validName = NAME_RE.test(name);
  streamInput.toggleAttribute('aria-invalid', !validName);
  if (!validName) {
    showError(t('cam.err.badName'));
    streamInput.focus();
    return;
  }
  if (!navigator.mediaDevices?.getUserMedia) {
    showError(t('cam.err.insecure'));
    return;
  }
  saveSettings();
  running = true;
  heldSlot = false;
  framesSent = 0;
  renderStats();
  setState('starting');
  try {
    await openCamera();
  } catch (error) {
    stop();
    showError(cameraError(error));
    return;
  }
  if (!running) return stopTracks(); // stopped while the permission prompt was up
  setState('connecting');
  pause?.follow(name);
  link.start(`/upload/${name}?gate=1`);
}

function stop() {
  running = false;
  link.stop();
  clearTimeout(sendTimer);
  clearTimeout(ackTimer);
  awaitingAck = false;
  stopTracks();
  pause?.follow(null);
  setState('idle');
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  if (running) stop();
  else start();
});

// A different camera or size needs the camera reopened; the socket stays.
for (const control of [cameraSelect, resolutionSelect]) {
  control.addEventListener('change', async () => {
    saveSettings();
    if (!running) return;
    try {
      await openCamera();
    } catch (error) {
      stop();
      showError(cameraError(error));
    }
  });
}
intervalSelect.addEventListener('change', saveSettings);
qualityInput.addEventListener('input', () => {
  qualityOut.textContent = qualityInput.value;
});
qualityInput.addEventListener('change', saveSettings);
streamInput.addEventListener('input', () => streamInput.removeAttribute('aria-invalid'));

// Never leave a camera on in a tab nobody looks at.
document.addEventListener('visibilitychange', () => {
  if (document.hidden && running) {
    stop();
    showError(t('cam.hidden'), true);
  }
});
window.addEventListener('pagehide', () => {
  if (running) stop();
});
navigator.mediaDevices?.addEventListener?.('devicechange', listDevices);

async function main() {
  devicesGroup.remove(); // back once the camera is allowed and devices have names
  translate();
  languageToggle(byId('lang-toggle'));
  try {
    config = await loadConfig();
    showAccount(config);
    pause = new PauseControl(byId('pause-panel'), config, byId('screen'));
  } catch {
    showError(t('cam.err.noConfig'));
  }
  const defaults = {
    stream: 'aula',
    camera: 'facing:environment',
    resolution: config ? `${config.width}x${config.height}` : '640x480',
    interval: String(config?.interval_ms ?? 500),
    quality: String(config?.quality ?? 75),
  };
  if (![...resolutionSelect.options].some((o) => o.value === defaults.resolution)) {
    const option = document.createElement('option');
    option.value = defaults.resolution;
    option.textContent = defaults.resolution.replace('x', ' × ');
    resolutionSelect.append(option);
  }
  const saved = (key) => load(`kindercam.cam.${key}`, defaults[key]);
  streamInput.value = NAME_RE.test(saved('stream')) ? saved('stream') : defaults.stream;
  fillIntervals(Number(saved('interval')) || Number(defaults.interval));
  resolutionSelect.value = saved('resolution');
  if (!resolutionSelect.value) resolutionSelect.value = defaults.resolution;
  const quality = Math.min(95, Math.max(20, Number(saved('quality')) || 75));
  qualityInput.value = String(Math.round(quality / 5) * 5);
  qualityOut.textContent = qualityInput.value;
  cameraSelect.value = saved('camera');
  if (!cameraSelect.value) cameraSelect.value = defaults.camera;
  startButton.disabled = false; // the form now holds the settings it will use
  onLanguage(() => {
    document.title = t('cam.pageTitle');
    devicesGroup.label = t('cam.devices'); // may be detached, out of translate()'s reach
    fillIntervals(Number(intervalSelect.value));
    setState(state);
    pause?.render();
  });
}

main();
