// The chat panel, of the room being watched: /chat for the server's own
// camera, /chat/NAME for any other room. Protocol: we send
// {"name","message","color":"RRGGBB"}; the server sends everyone
// {"type":"usermsg","id",...,"staff"?,"family"?}, {"type":"system",
// "event":"online"|"mute"|...,"online":N}, {"type":"delete","id"} when staff
// remove a message and, to the sender only, {"type":"error","code","message"}.
// Comings and goings arrive gathered: {"event":"online","joined":J,"left":L},
// at most one every couple of seconds, and nobody who stayed under a second.
// Staff also send {"type":"delete","id"} and {"type":"mute","id","minutes"}.
// A client that (re)joins first gets the recent history, then its own welcome.
// Everything from the network goes into the page as text, never as markup.

import { t, currentLang, onLanguage } from './i18n.js';
import { byId, load, save, Link } from './common.js';

const MAX_MESSAGE_CHARS = 1000;
/** Items kept in the list; older ones go once the reader is at the bottom. */
const MAX_ITEMS = 200;
/** "At the bottom" for autoscroll, in pixels: a reader above this is left alone. */
const BOTTOM_SLACK = 48;
const NAME_KEY = 'kindercam.chat.name';
const COLOR_KEY = 'kindercam.chat.color';
const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#8c564b', '#e377c2', '#0f8a7e', '#c2410c', '#4f46e5', '#a16207'];
const HEX6 = /^[0-9a-f]{6}$/i;
/** How long the mute button silences someone. */
const MUTE_MINUTES = 10;
const TRASH_ICON = 'M9 3h6l1 2h4v2H4V5h4l1-2Zm-3 6h12l-1 11a1 1 0 0 1-1 1H8a1 1 0 0 1-1-1L6 9Zm4 2v8h1.5v-8H10Zm2.5 0v8H14v-8h-1.5Z';
const MUTE_ICON =
  'M4 4h16a1 1 0 0 1 1 1v11a1 1 0 0 1-1 1H9l-5 4V5a1 1 0 0 1 1-1Zm4.4 3.4L7 8.8 9.2 11 7 13.2l1.4 1.4 2.2-2.2 2.2 2.2 1.4-1.4-2.2-2.2 2.2-2.2-1.4-1.4-2.2 2.2-2.2-2.2Z';
const SVG_NS = 'http://www.w3.org/2000/svg';

/** Identifies a message across a reconnect's replay (ids restart with the server). */
function messageKey(msg) {
  return `${msg.id}\n${msg.name}\n${msg.color}\n${msg.message}`;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function icon(path) {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  const p = document.createElementNS(SVG_NS, 'path');
  p.setAttribute('fill', 'currentColor');
  p.setAttribute('d', path);
  svg.append(p);
  return svg;
}

/** `config` is /config.json: a logged-in user's `name` is the one the server uses. */
export function startChat(config = {}) {
  const list = byId('messages');
  const empty = byId('chat-empty');
  const newButton = byId('new-messages');
  const form = byId('chat-form');
  const nameInput = byId('chat-name');
  const colorInput = byId('chat-color');
  const messageInput = byId('chat-message');
  const sendButton = byId('chat-send');
  const errorBox = byId('chat-error');
  const onlineText = byId('chat-online');
  const connText = byId('chat-conn');

  // With a login session the server posts under the session's name whatever
  // we send, so the name is shown, not asked for.
  const sessionName = config.name ? String(config.name) : '';
  /** Staff moderate. Without access control everyone counts as staff: then nobody does. */
  const moderator = config.auth === true && config.staff === true;
  if (sessionName) {
    nameInput.value = sessionName;
    nameInput.hidden = true;
    byId('chat-name-label').hidden = true;
    byId('chat-as-name').textContent = sessionName;
    byId('chat-as').hidden = false;
  } else {
    // Keep anything typed while the page was still starting.
    nameInput.value ||= load(NAME_KEY, '');
  }
  let color = load(COLOR_KEY, '');
  if (!/^#[0-9a-f]{6}$/i.test(color)) {
    color = PALETTE[Math.floor(Math.random() * PALETTE.length)];
    save(COLOR_KEY, color);
  }
  colorInput.value = color;
  nameInput.addEventListener('change', () => save(NAME_KEY, nameInput.value.trim()));
  colorInput.addEventListener('input', () => save(COLOR_KEY, colorInput.value));

  let online = 0;
  let userMessages = 0;
  /** Messages replayed on join, held until the join ends the replay; null when live. */
  let replay = null;
  let connected = false;
  let scrollOnOwnEcho = false;

  const isOwn = (msg) =>
    msg.name === nameInput.value.trim() &&
    String(msg.color).toLowerCase() === colorInput.value.slice(1).toLowerCase();

  // ---- rendering ----------------------------------------------------------

  const nearBottom = () => list.scrollHeight - list.scrollTop - list.clientHeight < BOTTOM_SLACK;

  function scrollToBottom() {
    list.scrollTop = list.scrollHeight;
    newButton.hidden = true;
  }

  /** Appends items; keeps a reader who scrolled up where they are. */
  function append(items, forceScroll = false) {
    if (!items.length) return;
    const stick = nearBottom();
    list.append(...items);
    empty.hidden = userMessages > 0;
    if (stick || forceScroll) {
      while (list.children.length > MAX_ITEMS) list.firstElementChild.remove();
      scrollToBottom();
    } else {
      newButton.hidden = false;
    }
  }

  function messageItem(msg, live) {
    const own = isOwn(msg);
    // Without access control everyone counts as staff, so the badge would say nothing.
    const staff = msg.staff && config.auth !== false;
    const item = el('li', ['msg', own && 'own', staff && 'by-staff'].filter(Boolean).join(' '));
    item.dataset.key = messageKey(msg);
    item.dataset.id = msg.id;
    item.dataset.name = msg.name;
    // A custom property set through the CSSOM, which the page's CSP allows.
    item.style.setProperty('--who', HEX6.test(msg.color) ? `#${msg.color}` : '#6b7280');
    const head = el('p', 'msg-head');
    head.append(el('span', 'msg-dot'), el('span', 'msg-name', msg.name));
    // A family login's messages say which family speaks, so staff know who it is.
    if (msg.family) head.append(el('span', 'msg-family', msg.family));
    if (staff) {
      const badge = el('span', 'msg-staff');
      badge.append(icon('M12 2l8 3v6c0 5-3.4 9.4-8 11-4.6-1.6-8-6-8-11V5l8-3Zm-1 13.4 5.7-5.7-1.4-1.4L11 12.6l-2.3-2.3-1.4 1.4L11 15.4Z'));
      const label = el('span', '', t('chat.staff'));
      label.dataset.i18n = 'chat.staff';
      badge.append(label);
      badge.title = t('chat.staffTitle');
      badge.dataset.i18nAttr = 'title:chat.staffTitle';
      head.append(badge);
    }
    if (own) {
      const you = el('span', 'msg-you', t('chat.you'));
      you.dataset.i18n = 'chat.you';
      head.append(you);
    }
    if (moderator) {
      item.classList.add('moderated');
      head.append(moderationTools(msg, staff));
    }
    // The time sits at the end of the text, WhatsApp-style, so the first line
    // keeps room for the name, the badges and staff's buttons.
    const body = el('p', 'msg-body');
    body.append(el('span', 'msg-text', msg.message));
    if (live) {
      const now = new Date();
      const time = el('time', 'msg-time', now.toLocaleTimeString(currentLang(), { hour: '2-digit', minute: '2-digit' }));
      time.dateTime = now.toISOString();
      body.append(time);
    }
    item.append(head, body);
    return item;
  }

  // ---- moderation (staff) ------------------------------------------------------
  // Each message gets "delete" and (for a parent's) "mute 10 min" buttons; either
  // asks for a confirmation in a small strip under the message, not a modal.

  function moderationTools(msg, byStaff) {
    const tools = el('span', 'msg-tools');
    const actions = byStaff ? ['delete'] : ['delete', 'mute'];
    for (const action of actions) {
      const button = el('button', `msg-tool ${action}`);
      button.type = 'button';
      button.dataset.action = action;
      button.append(icon(action === 'delete' ? TRASH_ICON : MUTE_ICON));
      tools.append(button);
    }
    labelTools(tools, msg.name);
    return tools;
  }

  function labelTools(tools, name) {
    for (const button of tools.querySelectorAll('.msg-tool')) {
      const label =
        button.dataset.action === 'delete'
          ? t('chat.deleteLabel', { name })
          : t('chat.muteLabel', { name, n: MUTE_MINUTES });
      button.setAttribute('aria-label', label);
      button.title = label;
    }
  }

  function closeConfirm(strip, refocus) {
    if (!strip) return;
    const item = strip.closest('li');
    strip.remove();
    item?.classList.remove('confirming');
    if (refocus) item?.querySelector(`.msg-tool.${strip.dataset.action}`)?.focus();
  }

  function confirmText(strip) {
    const name = strip.closest('li')?.dataset.name ?? '';
    return strip.dataset.action === 'delete'
      ? t('chat.confirmDelete')
      : t('chat.confirmMute', { name, n: MUTE_MINUTES });
  }

  function labelConfirm(strip) {
    strip.querySelector('.confirm-text').textContent = confirmText(strip);
    strip.querySelector('.confirm-yes').textContent = t(strip.dataset.action === 'delete' ? 'chat.doDelete' : 'chat.doMute');
    strip.querySelector('.confirm-no').textContent = t('chat.cancel');
  }

  function openConfirm(item, action) {
    closeConfirm(list.querySelector('.msg-confirm'), false);
    const strip = el('div', 'msg-confirm');
    strip.dataset.action = action;
    strip.setAttribute('role', 'group');
    const text = el('p', 'confirm-text');
    text.id = `confirm-${item.dataset.id}`;
    strip.setAttribute('aria-labelledby', text.id);
    const yes = el('button', 'confirm-yes');
    yes.type = 'button';
    const no = el('button', 'confirm-no');
    no.type = 'button';
    strip.append(text, el('span', 'confirm-buttons'));
    strip.lastElementChild.append(yes, no);
    item.append(strip);
    labelConfirm(strip);
    item.classList.add('confirming');
    strip.scrollIntoView({ block: 'nearest' });
    yes.focus();
  }

  function moderate(item, action) {
    const id = Number(item.dataset.id);
    const command = action === 'delete' ? { type: 'delete', id } : { type: 'mute', id, minutes: MUTE_MINUTES };
    if (!(connected && link.send(JSON.stringify(command)))) {
      showError(t('chat.disconnected'));
    }
  }

  list.addEventListener('click', (event) => {
    const button = event.target.closest('button');
    const item = button?.closest('li.msg');
    if (!item || !list.contains(item)) return;
    if (button.dataset.action) {
      openConfirm(item, button.dataset.action);
    } else if (button.classList.contains('confirm-yes')) {
      const strip = button.closest('.msg-confirm');
      moderate(item, strip.dataset.action);
      closeConfirm(strip, true);
    } else if (button.classList.contains('confirm-no')) {
      closeConfirm(button.closest('.msg-confirm'), true);
    }
  });

  list.addEventListener('keydown', (event) => {
    const strip = event.target.closest?.('.msg-confirm');
    if (strip && event.key === 'Escape') {
      event.preventDefault();
      closeConfirm(strip, true);
    }
  });

  function onlineLabel(n) {
    return n === 1 ? t('chat.online.one') : t('chat.online.many', { n });
  }

  /** "2 people joined · 1 person left · 5 people online" */
  function comingsAndGoings(joined, left, n) {
    const parts = [];
    if (joined > 0) parts.push(joined === 1 ? t('chat.joined.one') : t('chat.joined.many', { n: joined }));
    if (left > 0) parts.push(left === 1 ? t('chat.left.one') : t('chat.left.many', { n: left }));
    parts.push(onlineLabel(n));
    return parts.join(' · ');
  }

  function systemText(item) {
    const { event, online: n, name, minutes } = item.dataset;
    if (event === 'online') {
      return comingsAndGoings(Number(item.dataset.joined), Number(item.dataset.left), Number(n));
    }
    if (event === 'lagged') return t('chat.lagged');
    if (event === 'mute') {
      return name && minutes ? t('chat.mutedNotice', { name, n: minutes }) : t('chat.mutedSomeone');
    }
    return item.dataset.message || '';
  }

  const count = (value) => (Number.isFinite(value) && value > 0 ? Math.round(value) : 0);

  /**
   * System notes. Consecutive updates of who is online collapse into one line
   * that adds up who came and went, so they never crowd out the conversation;
   * anything else (a mute) keeps a line of its own.
   */
  function addSystem(msg) {
    const event = String(msg.event ?? '');
    if (event === 'welcome') return; // our own arrival: the count is in the header
    const last = list.lastElementChild;
    const merge = last?.classList.contains('system') && last.dataset.event === 'online' && event === 'online';
    const item = merge ? last : el('li', `system ${event === 'mute' ? 'notice' : ''}`.trim());
    if (event === 'online') {
      const before = (key) => (merge ? Number(item.dataset[key]) : 0);
      item.dataset.joined = String(before('joined') + count(msg.joined));
      item.dataset.left = String(before('left') + count(msg.left));
    }
    item.dataset.event = event;
    item.dataset.online = String(msg.online ?? '');
    item.dataset.message = String(msg.message ?? '');
    if (event === 'mute') {
      item.dataset.name = typeof msg.name === 'string' ? msg.name : '';
      const minutes = Number(msg.minutes);
      item.dataset.minutes = Number.isFinite(minutes) && minutes > 0 ? String(Math.round(minutes)) : '';
    }
    item.textContent = systemText(item);
    if (item !== last) append([item]);
  }

  function renderOnline() {
    onlineText.textContent = online ? onlineLabel(online) : '';
  }

  function showError(text) {
    errorBox.textContent = text;
    errorBox.hidden = false;
  }

  function hideError() {
    errorBox.hidden = true;
    errorBox.textContent = '';
  }

  function setConnected(on, why) {
    connected = on;
    sendButton.disabled = !on;
    connText.textContent = on ? '' : t(why);
    connText.dataset.key = on ? '' : why;
  }

  // ---- protocol ---------------------------------------------------------------

  /**
   * After a reconnect the server replays its recent history, which overlaps what
   * we already show. Keep what we have, and add only the replayed messages after
   * the longest stretch that matches the end of our list.
   */
  function endReplay() {
    const have = [...list.querySelectorAll('li.msg')].map((li) => li.dataset.key);
    const got = replay.map(messageKey);
    let overlap = Math.min(have.length, got.length);
    while (overlap > 0 && !got.slice(0, overlap).every((key, i) => key === have[have.length - overlap + i])) {
      overlap -= 1;
    }
    const fresh = replay.slice(overlap);
    userMessages += fresh.length;
    append(fresh.map((m) => messageItem(m, false)));
    replay = null;
  }

  function onMessage(event) {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    if (msg.type === 'usermsg') {
      msg.name = String(msg.name ?? '');
      msg.message = String(msg.message ?? '');
      msg.color = String(msg.color ?? '');
      msg.id = String(msg.id ?? '');
      msg.staff = msg.staff === true;
      msg.family = typeof msg.family === 'string' ? msg.family : '';
      if (replay) {
        replay.push(msg);
        return;
      }
      userMessages += 1;
      const own = isOwn(msg);
      append([messageItem(msg, true)], own && scrollOnOwnEcho);
      if (own) scrollOnOwnEcho = false;
    } else if (msg.type === 'system') {
      if (Number.isFinite(msg.online)) online = msg.online;
      renderOnline();
      if (replay) {
        endReplay(); // this is our own welcome: counted, not shown
        return;
      }
      addSystem(msg);
    } else if (msg.type === 'delete') {
      const id = String(msg.id);
      replay = replay?.filter((m) => m.id !== id) ?? null;
      for (const item of list.querySelectorAll('li.msg')) {
        if (item.dataset.id !== id) continue;
        // Keyboard users who just deleted it stay in the list, not on <body>.
        const hadFocus = item.contains(document.activeElement);
        item.remove();
        userMessages -= 1;
        if (hadFocus) list.focus({ preventScroll: true });
      }
      empty.hidden = userMessages > 0;
    } else if (msg.type === 'error') {
      showError(errorText(msg));
    }
  }

  /** The sender's error in the reader's language; the server's own words only for the unforeseen. */
  function errorText(msg) {
    switch (msg.code) {
      case 'rate_limited':
        return t('chat.rateLimited');
      case 'muted': {
        const minutes = Number(msg.minutes);
        return Number.isFinite(minutes) && minutes > 0 ? t('chat.mutedFor', { n: Math.ceil(minutes) }) : t('chat.muted');
      }
      case 'forbidden':
        return t('chat.forbidden');
      case 'bad_command':
        return t('chat.badCommand');
      case 'too_large':
        return t('chat.tooLong', { n: MAX_MESSAGE_CHARS });
      case 'bad_message':
        return t('chat.badMessage');
      default:
        return t('chat.serverError', { msg: String(msg.message ?? '') });
    }
  }

  const link = new Link({
    path: '/chat',
    onOpen: () => {
      replay = [];
      setConnected(true);
    },
    onMessage,
    onDown: () => {
      replay = null;
      setConnected(false, 'chat.disconnected');
    },
  });

  // ---- user input ----------------------------------------------------------------

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    hideError();
    const name = nameInput.value.trim();
    if (!name) {
      showError(t('chat.needName'));
      nameInput.focus();
      return;
    }
    const message = messageInput.value.trim();
    if (!message) {
      messageInput.focus();
      return;
    }
    if ([...message].length > MAX_MESSAGE_CHARS) {
      showError(t('chat.tooLong', { n: MAX_MESSAGE_CHARS }));
      return;
    }
    const sent = connected && link.send(JSON.stringify({ name, message, color: colorInput.value.slice(1) }));
    if (!sent) {
      showError(t('chat.disconnected'));
      return;
    }
    save(NAME_KEY, name);
    scrollOnOwnEcho = true;
    messageInput.value = '';
    messageInput.focus();
  });

  messageInput.addEventListener('input', hideError);
  nameInput.addEventListener('input', hideError);
  list.addEventListener('scroll', () => {
    if (nearBottom()) newButton.hidden = true;
  });
  newButton.addEventListener('click', () => {
    scrollToBottom();
    list.focus({ preventScroll: true }); // the button vanishes; keep keyboard users in the list
  });

  onLanguage(() => {
    renderOnline();
    for (const item of list.querySelectorAll('li.system')) item.textContent = systemText(item);
    for (const tools of list.querySelectorAll('.msg-tools')) labelTools(tools, tools.closest('li').dataset.name);
    for (const strip of list.querySelectorAll('.msg-confirm')) labelConfirm(strip);
    if (connText.dataset.key) connText.textContent = t(connText.dataset.key);
  });

  /** The socket's path for the chat of `room`. */
  const roomPath = (room) => (!room || room === config.default_stream ? '/chat' : `/chat/${room}`);

  setConnected(false, 'chat.connecting');
  return {
    /**
     * Joins the chat of `room`, leaving the one before: a room's talk is for
     * those who watch it, so the list starts again with the new room's history.
     */
    join(room) {
      const path = roomPath(room);
      if (link.running && link.path === path) return;
      if (link.running) {
        list.replaceChildren();
        userMessages = 0;
        online = 0;
        empty.hidden = false;
        newButton.hidden = true;
        renderOnline();
        hideError();
      }
      replay = null;
      setConnected(false, 'chat.connecting');
      link.start(path);
    },
  };
}
