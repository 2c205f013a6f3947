// The staff's pause button, on the viewer page and the broadcaster page: a
// large panel that says whether families can watch the room now and pauses it
// for them (1-120 minutes) or resumes it. It learns the room's gate from the
// socket's {"type":"gate"} messages (the page asks for them with ?gate=1) and
// from the API's answers; the minutes left count on the server's clock.

import { t, currentLang } from './i18n.js';
import { authedFetch } from './common.js';

const CHOICES = [5, 10, 15, 30, 60, 120];
const DEFAULT_MINUTES = 10;

/** "10:45" in the page's language. */
export function clockTime(unixS) {
  return new Date(unixS * 1000).toLocaleTimeString(currentLang(), { hour: '2-digit', minute: '2-digit' });
}

/** "lunes 07:30" in the page's language. */
export function dayAndTime(unixS) {
  return new Date(unixS * 1000).toLocaleString(currentLang(), {
    weekday: 'long',
    hour: '2-digit',
    minute: '2-digit',
  });
}

export class PauseControl {
  /**
   * `root` is an empty element to fill; `config` the page's /config.json (its
   * CSRF token and clock offset); `screen`, if given, the picture's frame: it
   * gets a large pause/resume button of its own, where a teacher's eyes are, and
   * a `data-gate` attribute that marks the picture while families are held.
   */
  constructor(root, config, screen = null) {
    this.config = config;
    this.stream = null;
    this.gate = null;
    this.busy = false;
    root.classList.add('pause-panel');
    root.innerHTML = `
      <h2 class="pause-title"></h2>
      <p class="pause-state" role="status"></p>
      <p class="pause-by"></p>
      <div class="pause-actions">
        <label class="pause-minutes"><span></span> <select></select></label>
        <button type="button" class="button big pause-toggle"></button>
      </div>
      <p class="pause-error" role="alert" hidden></p>`;
    this.root = root;
    this.title = root.querySelector('.pause-title');
    this.stateText = root.querySelector('.pause-state');
    this.byText = root.querySelector('.pause-by');
    this.minutesLabel = root.querySelector('.pause-minutes span');
    this.minutes = root.querySelector('select');
    this.minutesWrap = root.querySelector('.pause-minutes');
    this.button = root.querySelector('.pause-toggle');
    this.error = root.querySelector('.pause-error');
    this.minutes.replaceChildren(
      ...CHOICES.map((n) => {
        const option = document.createElement('option');
        option.value = String(n);
        option.textContent = String(n);
        option.selected = n === DEFAULT_MINUTES;
        return option;
      }),
    );
    this.button.addEventListener('click', () => this.toggle());
    this.screen = screen;
    this.overlay = null;
    if (screen) {
      this.overlay = document.createElement('button');
      this.overlay.type = 'button';
      this.overlay.className = 'stage-pause';
      this.overlay.hidden = true;
      this.overlay.addEventListener('click', () => this.toggle());
      screen.append(this.overlay);
    }
    this.minutes.addEventListener('change', () => this.render());
    setInterval(() => this.render(), 15_000);
  }

  /** Follows room `name`; its state arrives with the socket's first gate message. */
  follow(name) {
    if (name !== this.stream) this.gate = null;
    this.stream = name;
    this.render();
  }

  /** A {"type":"gate"} message, or the API's answer. */
  update(message) {
    if (message?.type === 'gate') {
      this.gate = { state: message.state, until: message.until, by: message.by };
    } else if (message && typeof message.paused === 'boolean') {
      const state = message.closed ? 'closed' : message.paused ? 'paused' : 'open';
      this.gate = { state, until: message.until, by: message.by };
    }
    this.render();
  }

  serverNow() {
    return (Date.now() + (this.config?.clockOffsetMs || 0)) / 1000;
  }

  render() {
    this.root.hidden = !this.stream;
    this.title.textContent = t('pause.title');
    this.minutesLabel.textContent = t('pause.minutes');
    const gate = this.gate;
    const paused = Boolean(gate?.until) && gate.state !== 'open';
    this.root.dataset.state = gate?.state || 'unknown';
    if (gate?.state === 'closed') {
      this.stateText.textContent = t('pause.closed');
    } else if (paused) {
      const left = Math.max(1, Math.ceil((gate.until - this.serverNow()) / 60));
      this.stateText.textContent = t('pause.paused', { time: clockTime(gate.until), n: left });
    } else {
      this.stateText.textContent = gate ? t('pause.open') : '';
    }
    this.byText.textContent = paused && gate.by ? t('pause.pausedBy', { who: gate.by }) : '';
    this.byText.hidden = !this.byText.textContent;
    this.minutesWrap.hidden = paused;
    this.button.textContent = t(paused ? 'pause.resume' : 'pause.pause');
    this.button.classList.toggle('primary', paused);
    this.button.classList.toggle('danger', !paused);
    this.button.disabled = this.busy || !gate;
    if (this.screen) {
      this.screen.dataset.gate = gate?.state || 'unknown';
      const closed = gate?.state === 'closed';
      this.overlay.hidden = !gate || !this.stream || closed;
      this.overlay.disabled = this.button.disabled;
      this.overlay.classList.toggle('paused', paused);
      this.overlay.textContent = paused
        ? t('pause.overlayResume', { n: Math.max(1, Math.ceil((gate.until - this.serverNow()) / 60)) })
        : t('pause.overlayPause', { n: Number(this.minutes.value) });
    }
  }

  async toggle() {
    if (!this.stream || this.busy) return;
    const paused = Boolean(this.gate?.until);
    const init = { method: paused ? 'DELETE' : 'POST', headers: { 'Content-Type': 'application/json' } };
    if (this.config?.csrf) init.headers['X-CSRF-Token'] = this.config.csrf;
    if (!paused) init.body = JSON.stringify({ minutes: Number(this.minutes.value) });
    this.busy = true;
    this.error.hidden = true;
    this.render();
    try {
      const reply = await authedFetch(`/api/streams/${encodeURIComponent(this.stream)}/pause`, 'application/json', init);
      const body = await reply.json().catch(() => ({}));
      if (!reply.ok) throw new Error(body.error || `HTTP ${reply.status}`);
      this.update(body);
    } catch (error) {
      this.error.textContent = t('pause.failed', { msg: error.message });
      this.error.hidden = false;
    } finally {
      this.busy = false;
      this.render();
    }
  }
}
