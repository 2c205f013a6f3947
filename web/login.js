// The login page: one form posting `name` and `code` to /login. The server
// answers with a redirect, to / on success or back here with ?error=wrong_code,
// rate_limited, bad_name or busy, which this script puts into words. /config.json is
// not public, so nothing here needs it; it is only asked whether a session
// already exists (a shared link opened from another site arrives without the
// SameSite=Strict cookie, and lands here although its owner is logged in).
// An invite's link, /login#code=..., fills the code in.

import { t, translate, onLanguage, languageToggle } from './i18n.js';
import { byId, load, save } from './common.js';

/** The chat's remembered name (chat.js uses the same key). */
const NAME_KEY = 'kindercam.chat.name';
const MAX_NAME_CHARS = 32;
/** After too many failures the server takes one more try per 10 s. */
const RATE_LIMIT_WAIT_S = 10;
/** The server's Retry-After when it is too busy to check a code. */
const BUSY_WAIT_S = 5;
const ERRORS = ['wrong_code', 'rate_limited', 'bad_name', 'busy'];

const form = byId('login-form');
const nameInput = byId('name');
const codeInput = byId('code');
const revealButton = byId('reveal');
const submitButton = byId('login-submit');
const errorBox = byId('login-error');
const noteBox = byId('login-note');

/** The message on show, as a string key, so a language switch can redo it. */
let errorKey = null;
let noteKey = null;
let waitUntil = 0;
let waitTimer = 0;
let submitting = false;

function render() {
  document.title = t('login.pageTitle');
  errorBox.textContent = errorKey ? t(errorKey) : '';
  errorBox.hidden = !errorKey;
  noteBox.textContent = noteKey ? t(noteKey) : '';
  noteBox.hidden = !noteKey;
  const shown = codeInput.type === 'text';
  revealButton.textContent = t(shown ? 'login.hide' : 'login.show');
  revealButton.setAttribute('aria-label', t(shown ? 'login.hideLabel' : 'login.showLabel'));
  const wait = Math.ceil((waitUntil - Date.now()) / 1000);
  submitButton.disabled = submitting || wait > 0;
  submitButton.textContent = submitting ? t('login.submitting') : wait > 0 ? t('login.wait', { n: wait }) : t('login.submit');
}

/** Shows `key` as the form's error and marks `field` (if any) as the one to fix. */
function fail(key, field) {
  errorKey = key;
  noteKey = null;
  for (const input of [nameInput, codeInput]) {
    if (input === field) {
      input.setAttribute('aria-invalid', 'true');
      input.setAttribute('aria-describedby', `login-error ${input.id}-hint`);
    } else {
      input.removeAttribute('aria-invalid');
      input.setAttribute('aria-describedby', `${input.id}-hint`);
    }
  }
  render();
  field?.focus();
}

function clearError(input) {
  if (!input.hasAttribute('aria-invalid')) return;
  input.removeAttribute('aria-invalid');
  input.setAttribute('aria-describedby', `${input.id}-hint`);
}

/** The server takes no more tries for a while: say so on the button, counting down. */
function holdOff(seconds) {
  waitUntil = Date.now() + seconds * 1000;
  clearInterval(waitTimer);
  waitTimer = setInterval(() => {
    if (Date.now() >= waitUntil) clearInterval(waitTimer);
    render();
  }, 1000);
  render();
}

form.addEventListener('submit', (event) => {
  // Phones add a space after an autocompleted word; codes never have one.
  codeInput.value = codeInput.value.trim();
  const name = nameInput.value.trim();
  nameInput.value = name;
  const chars = Array.from(name).length;
  if (submitting || Date.now() < waitUntil) {
    event.preventDefault();
  } else if (chars < 1 || chars > MAX_NAME_CHARS) {
    event.preventDefault();
    fail('login.err.bad_name', nameInput);
  } else if (!codeInput.value) {
    event.preventDefault();
    fail('login.err.needCode', codeInput);
  } else {
    // The browser posts the form itself; the name is kept for next time.
    save(NAME_KEY, name);
    submitting = true;
    render();
  }
});

revealButton.addEventListener('click', () => {
  codeInput.type = codeInput.type === 'password' ? 'text' : 'password';
  render();
});

for (const input of [nameInput, codeInput]) {
  input.addEventListener('input', () => {
    clearError(input);
    if (errorKey && !form.querySelector('[aria-invalid]')) {
      errorKey = null;
      render();
    }
  });
}

// Back from the next page (bfcache): the form is usable again.
window.addEventListener('pageshow', (event) => {
  if (event.persisted) {
    submitting = false;
    render();
  }
});

/** Goes to the camera when this browser already has a session. */
async function leaveIfLoggedIn() {
  try {
    // Asked like authedFetch does, so that "no" is a redirect, not a password dialog.
    const reply = await fetch('/config.json', {
      cache: 'no-store',
      redirect: 'manual',
      headers: { Accept: 'application/json, text/html;q=0.1' },
    });
    if (reply.ok) location.replace('/');
  } catch {
    // the server is away; the form is still the thing to show
  }
}

function main() {
  translate();
  languageToggle(byId('lang-toggle'));
  onLanguage(render);
  // Our own messages in our own words; JavaScript checks the fields instead of the browser.
  form.noValidate = true;
  revealButton.hidden = false;

  const params = new URLSearchParams(location.search);
  const error = params.get('error');
  // An invite's link carries the family's code in the fragment (#code=...),
  // which no request ever sends to a server: fill it in, then take it out of
  // the address bar and the history, so only the name is left to type.
  const invited = new URLSearchParams(location.hash.slice(1)).get('code')?.trim() || '';
  if (invited) codeInput.value = invited;
  // A reload should not repeat an old error.
  if (location.search || location.hash) history.replaceState(null, '', location.pathname);

  nameInput.value ||= load(NAME_KEY, '');
  if (error) {
    const known = ERRORS.includes(error);
    // Busy is nobody's typing mistake: no field is marked, and the button waits a moment.
    const field = error === 'bad_name' ? nameInput : error === 'busy' ? null : codeInput;
    fail(known ? `login.err.${error}` : 'login.err.other', field);
    if (error === 'rate_limited') holdOff(RATE_LIMIT_WAIT_S);
    if (error === 'busy') holdOff(BUSY_WAIT_S);
    return;
  }
  if (params.get('session') === 'ended') noteKey = 'login.ended';
  if (invited) noteKey = 'login.fromInvite';
  render();
  // A keyboard is there anyway on a computer; on a phone it would hide the page.
  if (matchMedia('(pointer: fine)').matches) (nameInput.value && !invited ? codeInput : nameInput).focus();
  // Someone opening an invite means to log in with its code, even in a browser
  // that has a session already (the director trying the link, a shared tablet).
  if (!invited) leaveIfLoggedIn();
}

main();
