// mfaflow demo page: a plain client of the public HTTP API (no framework, no build step).
// Flow: dev token → initiate → QR + live status (SSE, polling as fallback) → typed code or
// companion CLI → recovery codes (shown once) → devices (list, rename, remove); sign-in with
// a TOTP or recovery code: initiation → live status → code → AUTHENTICATED + decoded mfa_token;
// and sign-in with push: initiation → the number to pick on the phone → live status
// (INITIATED → PUSH_ACKNOWLEDGED → ALLOWED → AUTHENTICATED, or DENIED/EXPIRED/CANCELLED).
// Codes by email and SMS: add an address or a phone number (initiation sends a code, the dev
// inbox shows it, the typed code enrolls), sign in with a sent code, and confirm a change with
// one; each sent code shows where it went, its delivery state and "Send a new code".
// Once a user has a factor, adding a device, removing one and new recovery codes need step-up:
// the server answers 403 step_up_required, the page asks for a code (a STEP_UP sign-in) and
// repeats the request once with the mfa_token as X-MFA-Token.
// Passkeys (WebAuthn): "Add a passkey" takes the server's creation options through
// PublicKeyCredential.parseCreationOptionsFromJSON to navigator.credentials.create and sends
// credential.toJSON() back; "Sign in with a passkey" does the same with request options and
// navigator.credentials.get. Passkeys are bound to a domain name, so on an IP address (or where
// the deployment has them off) the card says where they work instead of offering the buttons.
// The MFA state panel (GET/PUT /verification-srv/mfa) follows every factor change; "Disable MFA"
// takes the step-up prompt or a link by mail, which opens this page with ?token=… to confirm.

const $ = (id) => document.getElementById(id);

const TERMINAL = new Set(['ENROLLED', 'EXPIRED', 'CANCELLED', 'FAILED']);
const STEPS = ['INITIATED', 'SCANNED', 'ENROLLED'];
const TEXT = {
  INITIATED: 'Waiting for a scan: scan the QR code with your authenticator app.',
  SCANNED: 'Scanned: type the 6-digit code your app shows, or let the companion finish.',
  ENROLLED: 'Enrolled: your authenticator app is set up.',
  EXPIRED: 'Expired: this QR code is no longer valid. Start again.',
  CANCELLED: 'Cancelled. Start again whenever you like.',
  FAILED: 'Failed: too many wrong codes. Start again.',
};
const HINT = {
  invalid_code: 'Wrong code.',
  expired: 'This enrollment has expired.',
  conflict: 'This enrollment is already finished.',
  too_many_requests: 'Too many attempts; wait a moment.',
  unauthorized: 'Your token is not valid any more; press Start again.',
  already_enrolled: 'This address is one of the user’s factors already.',
  not_found: 'Not found.',
  network: 'No connection.',
};
const POLL_MS = 2000;
const MAX_BACKOFF_MS = 30000;
// ?live=poll skips the event stream, to try the polling fallback.
const forcePoll = new URLSearchParams(location.search).get('live') === 'poll';

const state = {
  sub: '', email: '', token: '', // dev token for sub (with email as a verified claim)
  enr: null, // the enrollment on screen: {statusId, exchangeId, expiresAt, token, sub}
  status: '', reached: -1, seen: new Set(),
  es: null, polling: false, pollTimer: 0, etag: '', backoff: POLL_MS,
  tick: 0, skew: 0, // server clock minus ours, from the Date header
  owner: null, // {sub, token} whose devices are listed
};

// ---- HTTP ---------------------------------------------------------------------------------

class Problem extends Error {
  constructor(status, body = {}, retryAfter = 0) {
    super(body.detail || body.title || `HTTP ${status}`);
    this.status = status;
    this.code = body.code || '';
    this.retryAfter = retryAfter; // seconds, from a 429's Retry-After
  }
}

async function request(method, path, { body, token, headers = {} } = {}) {
  headers = { Accept: 'application/json', ...headers };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(path, { method, headers, cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new Problem(0, { detail: 'the dev stack cannot be reached', code: 'network' });
  }
  // Date has whole seconds: only trust it when the clocks are clearly apart.
  const skew = Date.parse(res.headers.get('Date') || '') - Date.now();
  if (!Number.isNaN(skew)) state.skew = Math.abs(skew) > 2000 ? skew : 0;
  return res;
}

// api sends a JSON request and returns the decoded answer (null for 204); a failure throws the
// problem+json body as a Problem.
async function api(method, path, body, token = state.token, headers = {}) {
  const res = await request(method, path, { body, token, headers });
  if (res.status === 204) return null;
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    if (res.status === 401 && token === state.token) state.token = '';
    throw new Problem(res.status, data, parseInt(res.headers.get('Retry-After'), 10) || 0);
  }
  return data;
}

// ensureToken mints a dev token for the user name (and the optional email, which the token then
// carries as verified, as an identity provider's would) unless the one held is for them already.
// A new token shows that user's MFA state, and the page remembers who signed in (not the token)
// so an emailed link opened later knows whose it should be.
async function ensureToken() {
  const sub = $('user').value.trim();
  const email = $('user-email').value.trim();
  if (!sub) throw new Problem(400, { detail: 'pick a user name first', code: 'bad_request' });
  if (sub !== state.sub || email !== state.email || !state.token) {
    const { token } = await api('POST', '/dev/token', email ? { sub, email } : { sub }, '');
    Object.assign(state, { sub, email, token });
    rememberUser(sub, email);
    refreshMfa({ sub, token });
    checkPasskeys(token).catch(() => {}); // the passkey card says whether the deployment has them
  }
  return { sub, token: state.token };
}

const REMEMBER_KEY = 'mfaflow-demo.user';

function rememberUser(sub, email) {
  try { localStorage.setItem(REMEMBER_KEY, JSON.stringify({ sub, email })); } catch { /* storage off: nothing remembered */ }
}

// recallUser is the user who last signed in on this browser ({sub, email}), or null.
function recallUser() {
  try {
    const u = JSON.parse(localStorage.getItem(REMEMBER_KEY) || 'null');
    return u && typeof u.sub === 'string' && u.sub ? { sub: u.sub, email: typeof u.email === 'string' ? u.email : '' } : null;
  } catch { return null; }
}

// ---- small DOM helpers --------------------------------------------------------------------

function h(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  e.append(...kids);
  return e;
}

function showError(id, err) {
  if (err?.code === 'cancelled') err = null; // the user closed the step-up prompt: nothing failed
  const p = $(id);
  p.hidden = !err;
  if (!err) return p.replaceChildren();
  if (typeof err === 'string') return p.replaceChildren(err);
  const detail = err.message.charAt(0).toUpperCase() + err.message.slice(1);
  const kids = [h('strong', {}, HINT[err.code] || 'Request failed.'), ` ${detail}`];
  if (err.code) kids.push(' (', h('code', { class: 'code-tag' }, err.code), ')');
  p.replaceChildren(...kids);
}

function announce(msg) { $('announce').textContent = msg; }

async function busy(button, fn) {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try { return await fn(); } finally { button.disabled = false; button.removeAttribute('aria-busy'); }
}

const fmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const when = (iso) => h('time', { datetime: iso }, fmt.format(new Date(iso)));
const shellQuote = (s) => `'${s.replaceAll("'", `'\\''`)}'`;
const path = (...parts) => parts.map(encodeURIComponent).join('/');
// deviceFile names the companion's device file for a user: safe in a shell without quotes.
const deviceFile = (sub) => `${sub.replace(/[^\w.-]+/g, '_').replace(/^[.-]+/, '') || 'phone'}.device`;

// ---- codes sent by email or SMS -----------------------------------------------------------
// Three places show a code that was sent (adding an address, the sign-in, the step-up prompt),
// each with the same block under the prefix 'oob-', 'signin-' or 'stepup-': #{prefix}sent says
// "Code sent to <destination>" (masked by the server) with the delivery state of the status
// object, and "Send a new code", which waits for the server's resend_after or a 429's
// Retry-After.

const OOB = new Set(['email', 'sms']);
const DELIVERY = { pending: 'sending…', sent: 'sent', failed: 'not delivered: send a new code' };
const sent = {}; // prefix → {path, token, exchangeId, delivery, until, timer}

// showSent shows the block for a code sent to destination; resendPath takes {"exchange_id"}.
function showSent(prefix, destination, resendPath, token, exchangeId) {
  hideSent(prefix);
  sent[prefix] = { path: resendPath, token, exchangeId, delivery: '', until: 0, timer: 0 };
  $(`${prefix}destination`).textContent = destination || 'your address';
  setDelivery(prefix, 'pending');
  $(`${prefix}resend`).disabled = false;
  $(`${prefix}resend-wait`).textContent = '';
  $(`${prefix}sent`).hidden = false;
}

function hideSent(prefix) {
  if (sent[prefix]) clearInterval(sent[prefix].timer);
  sent[prefix] = null;
  $(`${prefix}sent`).hidden = true;
}

// setDelivery shows a delivery state (pending, sent, failed) from a status object.
function setDelivery(prefix, delivery) {
  const s = sent[prefix];
  if (!s || !delivery || s.delivery === delivery) return;
  s.delivery = delivery;
  const e = $(`${prefix}delivery`);
  e.dataset.delivery = delivery;
  e.textContent = DELIVERY[delivery] || delivery;
}

// holdResend keeps "Send a new code" off for seconds, counting down beside it.
function holdResend(prefix, seconds) {
  const s = sent[prefix];
  if (!s) return;
  s.until = Date.now() + Math.max(1, Math.ceil(seconds)) * 1000;
  clearInterval(s.timer);
  const tick = () => {
    const left = Math.max(0, Math.ceil((s.until - Date.now()) / 1000));
    const wait = $(`${prefix}resend-wait`);
    wait.dataset.seconds = String(left);
    wait.textContent = left > 0 ? `A new code can be sent in ${waitText(left)}.` : '';
    $(`${prefix}resend`).disabled = left > 0;
    if (!left) clearInterval(s.timer);
  };
  tick();
  s.timer = setInterval(tick, 250);
}

// sentError shows a failed resend where the block's flow shows its errors.
const sentError = (prefix, err) => ({ 'oob-': oobError, 'signin-': signinError, 'stepup-': stepUpError })[prefix](err);

for (const prefix of ['oob-', 'signin-', 'stepup-']) {
  $(`${prefix}resend`).addEventListener('click', async () => {
    const s = sent[prefix];
    const button = $(`${prefix}resend`);
    if (!s || button.disabled) return;
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
    try {
      const res = await api('POST', s.path, { exchange_id: s.exchangeId }, s.token);
      if (s !== sent[prefix]) return;
      sentError(prefix, null);
      s.delivery = '';
      setDelivery(prefix, 'pending'); // a new code replaces the old one
      holdResend(prefix, (Date.parse(res.resend_after) - Date.now() - state.skew) / 1000);
    } catch (e) {
      if (s !== sent[prefix]) return;
      if (e.status === 429 && e.retryAfter) holdResend(prefix, e.retryAfter);
      sentError(prefix, e);
    } finally {
      button.removeAttribute('aria-busy');
      if (s === sent[prefix] && s.until <= Date.now()) button.disabled = false;
    }
  });
}

// ---- step-up ------------------------------------------------------------------------------
// Once a user has a factor, changing factors needs a fresh sign-in (DESIGN.md Part 3): the page
// tries the change; on 403 step_up_required it asks for a code in the card the change came
// from, signs in with {"usage_type":"STEP_UP"} and the user's own token, and repeats the change
// once with the mfa_token as X-MFA-Token. Each mfa_token works once, so nothing is kept.

const STEPUP_TITLE = {
  totp: "Confirm it's you: enter a code from your authenticator app",
  backupcode: "Confirm it's you: enter one of your recovery codes",
  email: "Confirm it's you: enter the code sent to your email address",
  sms: "Confirm it's you: enter the code sent to your phone",
  webauthn: "Confirm it's you: use your passkey",
};
// Answers after which the step-up sign-in itself still takes codes; after any other failure
// the next try starts a new one.
const STEPUP_RETRY_SAME = new Set(['invalid_code', 'code_replayed', 'bad_request']);

const stepup = {
  cur: null, // the prompt on screen: {owner: {sub, token}, method, exchangeId, stop, resolve, reject}
  attempts: 0,
};

// withStepUp runs change(headers) and returns its answer. When the server wants step-up, it
// asks the user to confirm it is them, next to anchor (why: what the change is, for the
// prompt), and runs change once more with X-MFA-Token. A closed prompt throws a Problem with
// code 'cancelled', which showError leaves unshown.
async function withStepUp(owner, anchor, why, change) {
  try {
    return await change({});
  } catch (e) {
    if (e.code !== 'step_up_required') throw e;
  }
  const mfaToken = await confirmIdentity(owner, anchor, why);
  return change({ 'X-MFA-Token': mfaToken });
}

// confirmIdentity shows the step-up prompt after anchor and resolves with the mfa_token of a
// STEP_UP sign-in of owner, once the user has typed a code the server accepts.
function confirmIdentity(owner, anchor, why) {
  closeStepUp(); // one prompt at a time: a newer change takes the place of an older one
  return new Promise((resolve, reject) => {
    stepup.cur = { owner, method: '', exchangeId: '', stop: null, resolve, reject };
    stepup.attempts = 0;
    const box = $('stepup');
    anchor.after(box);
    $('stepup-why').textContent = `${why} for ${owner.sub}, sign in again with a second factor.`;
    $('stepup-form').dataset.attempts = '0';
    // A user whose default method is a passkey is asked for one first.
    if (mfa.owner?.sub === owner.sub && mfa.st?.default_method === 'WEBAUTHN' && !$('stepup-method-webauthn-label').hidden) {
      $('stepup-method-webauthn').checked = true;
    }
    setStepUpMethod();
    box.hidden = false;
    (stepUpMethod() === 'webauthn' ? $('stepup-submit') : $('stepup-code')).focus();
    stepUpSend();
  });
}

// closeStepUp hides the prompt and settles its promise: with the mfa_token, or as cancelled.
function closeStepUp(mfaToken) {
  const cur = stepup.cur;
  stepup.cur = null;
  $('stepup').hidden = true;
  $('stepup-code').value = '';
  stepUpError(null);
  hideSent('stepup-');
  if (cur?.stop) cur.stop();
  if (!cur) return;
  if (mfaToken) cur.resolve(mfaToken);
  else cur.reject(new Problem(0, { detail: 'not confirmed', code: 'cancelled' }));
}

const stepUpMethod = () => document.querySelector('input[name="stepup-method"]:checked').value;

function setStepUpMethod() {
  const method = stepUpMethod();
  $('stepup-title').textContent = STEPUP_TITLE[method];
  setCodeInput(method, 'stepup-');
  // A passkey needs no code: Confirm runs the browser's passkey prompt.
  const pk = method === 'webauthn';
  $('stepup-code-field').hidden = pk;
  $('stepup-submit').textContent = pk ? 'Use a passkey' : 'Confirm';
  if (pk) $('stepup-code-hint').textContent = 'Your browser asks for the passkey (fingerprint, face, screen lock or security key) when you press “Use a passkey”.';
  stepUpError(null);
}

for (const radio of document.querySelectorAll('input[name="stepup-method"]')) {
  radio.addEventListener('change', () => {
    setStepUpMethod();
    (stepUpMethod() === 'webauthn' ? $('stepup-submit') : $('stepup-code')).focus();
    stepUpSend();
  });
}

$('stepup-cancel').addEventListener('click', () => closeStepUp());

// stepUpSend starts the STEP_UP sign-in at once when the prompt asks for a code by email or
// SMS (the code has to be sent before it can be typed), and shows where it went.
async function stepUpSend() {
  const cur = stepup.cur;
  const method = stepUpMethod();
  if (!cur || !OOB.has(method) || (cur.method === method && cur.exchangeId)) return;
  if (cur.stop) cur.stop();
  Object.assign(cur, { method, exchangeId: '', stop: null });
  hideSent('stepup-');
  try {
    const res = await api('POST', `/verification-srv/authentication/${method}/initiation`, { usage_type: 'STEP_UP' }, cur.owner.token);
    if (cur !== stepup.cur || stepUpMethod() !== method) return;
    cur.exchangeId = res.exchange_id.exchange_id;
    showSent('stepup-', res.destination, `/verification-srv/authentication/${method}/resend`, cur.owner.token, cur.exchangeId);
    cur.stop = follow(res.status_id, cur.owner.token, (s) => { if (cur === stepup.cur) setDelivery('stepup-', s.delivery); }, () => {});
  } catch (e) {
    if (cur !== stepup.cur) return;
    cur.method = '';
    stepUpError(e);
  }
}

// stepUpError shows err in the prompt, with the sign-in's hints; data-code is its code.
function stepUpError(err) {
  const p = $('stepup-error');
  delete p.dataset.code;
  if (!err || typeof err === 'string') return showError('stepup-error', err);
  if (isBrowserError(err)) err = browserProblem(err);
  const hint = err.code === 'no_factor' ? NO_FACTOR[stepUpMethod()] : SIGNIN_HINT[err.code] || PASSKEY_HINT[err.code];
  if (!hint) showError('stepup-error', err);
  else p.replaceChildren(h('strong', {}, hint), ' ', h('span', { class: 'detail' }, err.message), ' (', h('code', { class: 'code-tag' }, err.code), ')');
  p.dataset.code = err.code || '';
  p.hidden = false;
}

$('stepup-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const cur = stepup.cur;
  if (!cur) return;
  const method = stepUpMethod();
  if (method === 'webauthn') return stepUpPasskey(cur);
  const input = $('stepup-code');
  const code = typedCode(method, input.value);
  if (!code) {
    input.setAttribute('aria-invalid', 'true');
    stepUpError(CODE_WANTED[method]);
    return input.focus();
  }
  if (OOB.has(method) && (cur.method !== method || !cur.exchangeId)) {
    // The code the user typed belongs to no sign-in any more: send a new one.
    stepUpError('That code is no longer valid; a new one is on its way.');
    return stepUpSend();
  }
  busy($('stepup-submit'), async () => {
    try {
      if (cur.method !== method || !cur.exchangeId) {
        const res = await api('POST', `/verification-srv/authentication/${method}/initiation`, { usage_type: 'STEP_UP' }, cur.owner.token);
        Object.assign(cur, { method, exchangeId: res.exchange_id.exchange_id });
      }
      const res = await api('POST', `/verification-srv/authentication/${method}/verification`,
        { exchange_id: cur.exchangeId, pass_code: code }, cur.owner.token);
      if (cur !== stepup.cur) return;
      if (!res.mfa_token) throw new Problem(0, { detail: 'the sign-in gave no mfa_token; try again' });
      closeStepUp(res.mfa_token);
    } catch (e) {
      if (cur !== stepup.cur) return;
      if (!STEPUP_RETRY_SAME.has(e.code)) {
        cur.exchangeId = '';
        hideSent('stepup-');
      }
      input.setAttribute('aria-invalid', 'true');
      stepUpError(e);
      input.select();
    } finally {
      $('stepup-form').dataset.attempts = String(++stepup.attempts);
    }
  });
});

// stepUpPasskey answers the prompt with a passkey: a STEP_UP passkey sign-in, whose browser
// prompt Confirm ("Use a passkey") opens. A browser that gives no passkey leaves the prompt open
// for another try or another way, and the sign-in it started is cancelled.
function stepUpPasskey(cur) {
  busy($('stepup-submit'), async () => {
    try {
      const token = cur.owner.token;
      const res = await api('POST', '/verification-srv/authentication/webauthn/initiation', { usage_type: 'STEP_UP' }, token);
      const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(res.public_key);
      let credential;
      try {
        credential = await navigator.credentials.get({ publicKey });
      } catch (e) {
        api('DELETE', `/verification-srv/verificationstatus/${path(res.status_id)}`, undefined, token).catch(() => {});
        throw e;
      }
      if (cur !== stepup.cur) return;
      const out = await api('POST', '/verification-srv/authentication/webauthn/verification',
        { exchange_id: res.exchange_id.exchange_id, credential: credential.toJSON() }, token);
      if (cur !== stepup.cur) return;
      if (!out.mfa_token) throw new Problem(0, { detail: 'the sign-in gave no mfa_token; try again' });
      closeStepUp(out.mfa_token);
    } catch (e) {
      if (cur === stepup.cur) stepUpError(e);
    } finally {
      $('stepup-form').dataset.attempts = String(++stepup.attempts);
    }
  });
}

// ---- enrollment ---------------------------------------------------------------------------

$('start-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  showError('error', null);
  busy($('start'), async () => {
    try {
      const { sub, token } = await ensureToken();
      const enr = await withStepUp({ sub, token }, $('user-hint'), 'To add another device',
        (headers) => api('POST', '/verification-srv/v2/setup/initiate/totp', undefined, token, headers));
      abandon();
      begin(enr, sub, token);
    } catch (e) { showError('error', e); }
  });
});

// abandon cancels the enrollment on screen if it is still pending, as a new one replaces it.
function abandon() {
  const enr = state.enr;
  stopWatching();
  if (enr && !TERMINAL.has(state.status)) {
    api('DELETE', `/verification-srv/verificationstatus/${path(enr.statusId)}`, undefined, enr.token).catch(() => {});
  }
}

function begin(res, sub, token) {
  state.enr = {
    statusId: res.status_id, exchangeId: res.exchange_id.exchange_id,
    expiresAt: Date.parse(res.exchange_id.expires_at), token, sub,
  };
  Object.assign(state, { status: '', reached: -1, seen: new Set(), etag: '', backoff: POLL_MS });
  const qr = $('qr');
  qr.hidden = !String(res.qr_code || '').startsWith('data:image/');
  if (!qr.hidden) qr.src = res.qr_code;
  $('otpauth-uri').value = res.otpauth_uri;
  $('secret').value = res.totp_secret.replace(/(.{4})(?=.)/g, '$1 ');
  document.querySelector('[data-copy="secret"]').dataset.copyValue = res.totp_secret;
  // --device makes the companion push-capable: it keeps a device key that signs push answers.
  $('companion-cmd').value = `go run ./mobile-bridge/cmd/companion enroll --uri ${shellQuote(res.otpauth_uri)} --device ${deviceFile(sub)}`;
  $('code').value = '';
  $('code').removeAttribute('aria-invalid');
  showError('verify-error', null);
  $('done').hidden = true;
  $('status-history').replaceChildren();
  setPending(true);
  $('enrollment').hidden = false;
  apply({ status: 'INITIATED', id: res.status_id }); // the state every enrollment starts in
  startCountdown();
  watch();
  $('h-scan').focus();
}

function setPending(pending) {
  for (const e of $('verify-form').elements) e.disabled = !pending;
  // Once the enrollment is over its secret has no business on screen, nor has the code form.
  $('scan').hidden = $('verify-form').hidden = $('finish-hint').hidden = !pending;
  $('scan-over').hidden = pending;
  $('start').textContent = pending ? 'Start over' : 'Start a new enrollment';
}

// apply shows a status object from any source (initiation, stream, poll, enroll, cancel).
function apply(s) {
  const enr = state.enr;
  if (!enr || (s.id && s.id !== enr.statusId)) return;
  if (s.status === state.status || TERMINAL.has(state.status)) return; // terminal never changes
  state.status = s.status;
  state.reached = Math.max(state.reached, STEPS.indexOf(s.status));
  state.seen.add(s.status);
  const badge = $('status');
  badge.dataset.status = s.status;
  badge.textContent = s.status;
  $('status-text').textContent = TEXT[s.status] || '';
  const terminal = TERMINAL.has(s.status);
  renderSteps($('steps'), STEPS, state.reached, state.seen, terminal);
  const time = new Date(s.updated_at || Date.now());
  $('status-history').append(h('li', { 'data-status': s.status },
    h('time', { datetime: time.toISOString() }, time.toLocaleTimeString()), ' ', s.status));
  announce(`Status ${s.status}. ${TEXT[s.status] || ''}`);
  if (!terminal) return;
  stopWatching();
  setPending(false);
  if (s.status === 'ENROLLED') {
    $('done').hidden = false;
    $('done').textContent = 'Done! The device is registered; you can rename or remove it below.';
    loadDevices({ sub: enr.sub, token: enr.token });
    loadRecovery({ sub: enr.sub, token: enr.token }, true);
  }
}

// renderSteps marks the items of a step indicator (li[data-step]) done, skipped (passed without
// being seen), current (next) or todo, with the state in words for screen readers.
function renderSteps(ol, steps, reached, seen, terminal) {
  for (const li of ol.children) {
    const i = steps.indexOf(li.dataset.step);
    if (i <= reached) li.dataset.state = seen.has(li.dataset.step) ? 'done' : 'skipped';
    else li.dataset.state = i === reached + 1 && !terminal ? 'current' : 'todo';
    if (li.dataset.state === 'current') li.setAttribute('aria-current', 'step');
    else li.removeAttribute('aria-current');
    li.querySelector('.visually-hidden')?.remove();
    if (li.dataset.state !== 'todo') li.append(h('span', { class: 'visually-hidden' }, ` (${li.dataset.state === 'current' ? 'next' : li.dataset.state})`));
  }
}

// watch follows the status live with server-sent events; when the stream cannot be opened
// (readyState CLOSED before a terminal state) it falls back to polling.
function watch() {
  if (forcePoll || !('EventSource' in window)) return startPolling();
  const { statusId, token } = state.enr;
  const es = new EventSource(`/verification-srv/verificationstatus/${path(statusId)}/events?access_token=${encodeURIComponent(token)}`);
  state.es = es;
  transport('Live updates: server-sent events (connecting…)');
  es.onopen = () => transport('Live updates: server-sent events');
  es.addEventListener('status', (e) => { if (state.es === es) apply(JSON.parse(e.data)); });
  es.onerror = () => {
    if (state.es !== es) return;
    if (es.readyState === EventSource.CLOSED) {
      es.close();
      state.es = null;
      startPolling('the event stream is unavailable');
    } else transport('Live updates: reconnecting…');
  };
}

function stopWatching() {
  if (state.es) state.es.close();
  state.es = null;
  state.polling = false;
  clearTimeout(state.pollTimer);
  clearInterval(state.tick);
}

function startPolling(why) {
  state.polling = true;
  transport(`Polling every ${POLL_MS / 1000} s${why ? ` (${why})` : ''}`);
  poll();
}

// poll fetches the status once, conditionally (ETag), and schedules the next poll: every 2 s,
// slower after failures, and never sooner than a 429's Retry-After.
async function poll() {
  const enr = state.enr;
  if (!enr) return;
  clearTimeout(state.pollTimer);
  let next = POLL_MS;
  try {
    const headers = state.etag ? { 'If-None-Match': state.etag } : {};
    const res = await request('GET', `/verification-srv/verificationstatus/${path(enr.statusId)}`, { token: enr.token, headers });
    if (enr !== state.enr) return;
    if (res.status === 429) {
      state.backoff = Math.min(state.backoff * 2, MAX_BACKOFF_MS);
      next = Math.max(state.backoff, (parseInt(res.headers.get('Retry-After'), 10) || 0) * 1000);
      transport(`Polling: the server asked to slow down; next check in ${Math.ceil(next / 1000)} s`);
    } else if (res.status === 304) {
      state.backoff = POLL_MS;
    } else if (res.ok) {
      state.backoff = POLL_MS;
      state.etag = res.headers.get('ETag') || '';
      apply(await res.json());
    } else {
      const p = new Problem(res.status, await res.json().catch(() => ({})));
      next = state.backoff = Math.min(state.backoff * 2, MAX_BACKOFF_MS);
      transport(`Polling failed: ${p.message} (${p.code || res.status}); retrying`);
    }
  } catch (e) {
    next = state.backoff = Math.min(state.backoff * 2, MAX_BACKOFF_MS);
    transport(`Polling failed: ${e.message}; retrying`);
  }
  if (state.polling && enr === state.enr && !TERMINAL.has(state.status)) state.pollTimer = setTimeout(poll, next);
}

function transport(msg) { $('transport').textContent = msg; }

function startCountdown() {
  const enr = state.enr;
  const bar = $('expiry-bar');
  bar.max = Math.max(1, (enr.expiresAt - Date.now() - state.skew) / 1000);
  const tick = () => {
    const left = Math.max(0, Math.ceil((enr.expiresAt - Date.now() - state.skew) / 1000));
    $('countdown').textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, '0')}`;
    $('countdown').dateTime = `PT${left}S`;
    bar.value = left;
    $('expiry').dataset.urgent = String(left <= 30);
    if (left > 0) return;
    clearInterval(state.tick);
    $('expiry-label').textContent = 'Expired';
    if (!state.polling) poll(); // one check, so EXPIRED shows without waiting for the stream
  };
  $('expiry-label').textContent = 'Expires in';
  clearInterval(state.tick);
  state.tick = setInterval(tick, 1000);
  tick();
}

$('verify-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const enr = state.enr;
  const input = $('code');
  const code = input.value.replace(/\s/g, '');
  if (!/^\d{6}$/.test(code)) {
    input.setAttribute('aria-invalid', 'true');
    showError('verify-error', 'Enter the 6 digits your authenticator app shows.');
    return input.focus();
  }
  busy($('verify'), async () => {
    try {
      const body = { exchange_id: enr.exchangeId, verification_code: code, friendly_name: $('friendly-name').value.trim() };
      apply(await api('POST', '/verification-srv/v2/setup/enroll/totp', body, enr.token));
      input.removeAttribute('aria-invalid');
      showError('verify-error', null);
    } catch (e) {
      input.setAttribute('aria-invalid', 'true');
      showError('verify-error', e);
      input.select();
    }
  });
});

$('cancel').addEventListener('click', () => {
  const enr = state.enr;
  busy($('cancel'), async () => {
    try { apply(await api('DELETE', `/verification-srv/verificationstatus/${path(enr.statusId)}`, undefined, enr.token)); }
    catch (e) { showError('verify-error', e); }
  });
});

// ---- copy buttons -------------------------------------------------------------------------

document.addEventListener('click', async (ev) => {
  const b = ev.target.closest('button[data-copy]');
  if (!b) return;
  const input = $(b.dataset.copy);
  try {
    await navigator.clipboard.writeText(b.dataset.copyValue || input.value);
  } catch {
    input.select(); // the clipboard API needs a secure context; let the user copy by hand
    return announce('Selected; press Ctrl+C to copy.');
  }
  b.textContent = 'Copied';
  announce('Copied to the clipboard.');
  setTimeout(() => { b.textContent = 'Copy'; }, 1500);
});

// ---- devices ------------------------------------------------------------------------------

$('refresh').addEventListener('click', () => busy($('refresh'), () => loadDevices()));

async function loadDevices(owner) {
  showError('devices-error', null);
  try {
    state.owner = owner || await ensureToken();
    if (!owner) loadRecovery(state.owner, false);
    const list = await api('GET', '/device-srv/devices', undefined, state.owner.token);
    $('devices').replaceChildren(...list.map(deviceItem));
    $('devices').dataset.count = String(list.length);
    $('devices-empty').hidden = list.length > 0;
    $('devices-empty').textContent = `${state.owner.sub} has no devices yet.`;
    $('h-devices').textContent = `Devices of ${state.owner.sub}`;
    setPushDevices(state.owner.sub, list.filter((d) => d.push));
    refreshMfa(state.owner); // the device list is reloaded after every factor change
  } catch (e) { showError('devices-error', e); }
}

const KIND = { EMAIL: 'Codes by email', SMS: 'Codes by SMS', WEBAUTHN: 'Passkey' };

function deviceItem(d) {
  const name = d.friendly_name || 'Unnamed device';
  const li = h('li', { 'data-ph-id': d.ph_id, 'data-push': String(!!d.push), 'data-type': d.type || '' });
  if (d.type === 'WEBAUTHN') {
    li.dataset.aaguid = d.aaguid || '';
    li.dataset.backedUp = String(!!d.backed_up);
  }
  const url = `/device-srv/devices/${path(d.ph_id)}`;
  const act = async (button, fn) => {
    await busy(button, async () => {
      try { await fn(); await loadDevices(state.owner); }
      catch (e) { showError('devices-error', e); }
    });
  };
  const show = () => {
    li.replaceChildren(
      h('div', { class: 'device-main' },
        h('span', { class: 'device-name' }, name),
        d.push ? h('span', { class: 'push-tag' }, 'Push', h('span', { class: 'visually-hidden' }, ': can approve sign-ins')) : '',
        d.type === 'WEBAUTHN' ? h('span', { class: 'passkey-tag' }, 'Passkey') : '',
        h('span', { class: 'meta' }, ...(d.destination ? [`${KIND[d.type] || d.type} to `, h('span', { class: 'device-destination' }, d.destination), ' · '] : []),
          ...(d.type === 'WEBAUTHN' ? [h('span', { class: 'passkey-backup' }, d.backed_up ? 'synced or backed up' : 'on this authenticator only'), ' · '] : []),
          'Added ', when(d.created_at), ' · last used ', d.last_used_at ? when(d.last_used_at) : 'never')),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'secondary rename', 'aria-label': `Rename ${name}`, onclick: renaming }, 'Rename'),
        h('button', { type: 'button', class: 'danger-outline remove', 'aria-label': `Remove ${name}`, onclick: confirming }, 'Remove')));
  };
  const renaming = () => {
    const id = `rename-${d.ph_id}`;
    const input = h('input', { id, class: 'rename-input', value: name, maxlength: '64', required: '' });
    const save = h('button', { type: 'submit', class: 'primary save' }, 'Save');
    li.replaceChildren(h('form', {
      class: 'row-form', onsubmit: (ev) => {
        ev.preventDefault();
        act(save, () => api('PATCH', url, { friendly_name: input.value.trim() }, state.owner.token));
      },
    }, h('div', { class: 'field' }, h('label', { for: id }, `New name for “${name}”`), input),
    save, h('button', { type: 'button', class: 'secondary', onclick: show }, 'Cancel')));
    input.select();
  };
  const confirming = () => {
    const remove = (owner) => withStepUp(owner, $('devices'), `To remove “${name}”`,
      (headers) => api('DELETE', url, undefined, owner.token, headers));
    const yes = h('button', { type: 'button', class: 'danger confirm-remove', onclick: () => act(yes, () => remove(state.owner)) }, 'Yes, remove');
    li.replaceChildren(
      h('p', { class: 'confirm' }, `Remove “${name}”? Codes from it will no longer be accepted.`),
      h('div', { class: 'actions' }, yes, h('button', { type: 'button', class: 'secondary', onclick: show }, 'Keep')));
    yes.focus();
  };
  show();
  return li;
}

// ---- recovery codes -----------------------------------------------------------------------
// After the first enrollment the page generates a set and shows it once; dismissing removes the
// codes from the DOM (and from memory). The count of unused codes comes from GET.

const recovery = { owner: null, codes: null };

function codesAnnounce(msg) { $('codes-announce').textContent = msg; }

function setRemaining(n) {
  const b = $('codes-remaining');
  b.dataset.remaining = String(n);
  b.textContent = n === null ? 'no set yet' : `${n} remaining`;
}

// loadRecovery shows the recovery state of owner; with generate, a user without any set gets one.
async function loadRecovery(owner, generate) {
  showError('codes-error', null);
  recovery.owner = owner;
  $('recovery').hidden = false;
  try {
    const st = await api('GET', '/verification-srv/backupcodes', undefined, owner.token);
    if (recovery.owner !== owner) return;
    if (!recovery.codes) setRemaining(st.created_at ? st.remaining : null);
    if (st.created_at || !generate) return;
    $('codes-regen-row').hidden = true; // the first set: nothing to replace yet
    try { await generateCodes(owner); } finally { if (!recovery.codes) $('codes-regen-row').hidden = false; }
  } catch (e) { showError('codes-error', e); }
}

async function generateCodes(owner) {
  const set = await withStepUp(owner, $('codes-confirm'), 'To make a set of recovery codes',
    (headers) => api('POST', '/verification-srv/backupcodes', undefined, owner.token, headers));
  if (recovery.owner !== owner) return;
  recovery.codes = set.codes;
  $('recovery-codes').replaceChildren(...set.codes.map((c) => h('li', {}, h('code', {}, c))));
  $('codes-panel').hidden = false;
  $('codes-regen-row').hidden = true;
  setRemaining(set.codes.length);
  refreshMfa(owner);
  $('h-recovery').focus();
  codesAnnounce(`${set.codes.length} recovery codes generated. Save them now; they are shown only once.`);
}

function codesText() {
  return [`mfaflow recovery codes for ${recovery.owner.sub}`, `generated ${new Date().toISOString()}`,
    'Each code works once.', '', ...recovery.codes, ''].join('\n');
}

$('codes-copy').addEventListener('click', async () => {
  const b = $('codes-copy');
  let done = false;
  try {
    await navigator.clipboard.writeText(recovery.codes.join('\n'));
    done = true;
  } catch {
    // No clipboard API (insecure context, denied permission): select the list instead, and try
    // the old copy command on the selection.
    const range = document.createRange();
    range.selectNodeContents($('recovery-codes'));
    const sel = getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    try { done = document.execCommand('copy'); } catch { done = false; }
  }
  if (!done) return codesAnnounce('The codes are selected; press Ctrl+C to copy them.');
  b.textContent = 'Copied';
  codesAnnounce('Recovery codes copied to the clipboard.');
  setTimeout(() => { b.textContent = 'Copy'; }, 1500);
});

$('codes-download').addEventListener('click', () => {
  const url = URL.createObjectURL(new Blob([codesText()], { type: 'text/plain' }));
  const a = h('a', { href: url, download: `mfaflow-recovery-codes-${recovery.owner.sub.replace(/[^\w.-]+/g, '_')}.txt`, hidden: '' });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30000);
  codesAnnounce('Recovery codes downloaded as a text file.');
});

$('codes-dismiss').addEventListener('click', () => {
  recovery.codes = null;
  $('recovery-codes').replaceChildren(); // gone from the page, not just hidden
  $('codes-panel').hidden = true;
  $('codes-regen-row').hidden = false;
  codesAnnounce('Recovery codes hidden. They cannot be shown again; generate a new set if you lose them.');
  $('h-recovery').focus();
  loadRecovery(recovery.owner, false);
});

$('codes-regen').addEventListener('click', () => {
  $('codes-confirm').hidden = false;
  $('codes-regen-row').hidden = true;
  $('codes-confirm-yes').focus();
});

$('codes-confirm-no').addEventListener('click', () => {
  $('codes-confirm').hidden = true;
  $('codes-regen-row').hidden = false;
  $('codes-regen').focus();
});

$('codes-confirm-yes').addEventListener('click', () => busy($('codes-confirm-yes'), async () => {
  showError('codes-error', null);
  try {
    await generateCodes(recovery.owner);
    $('codes-confirm').hidden = true;
  } catch (e) { showError('codes-error', e); }
}));

// ---- codes by email and SMS: adding an address -------------------------------------------
// An email address or a phone number is a factor once the user has typed the code sent there:
// initiation (with step-up once the user has a factor) → "Code sent to" + live delivery and
// status → the code → ENROLLED, and the device list shows it.

const OOB_TEXT = {
  INITIATED: 'Waiting for the code: read it in the message and type it here.',
  ENROLLED: 'Enrolled: codes sent there now sign you in.',
  EXPIRED: 'Expired: the code is no longer valid. Add the address again.',
  CANCELLED: 'Cancelled. Add the address again whenever you like.',
  FAILED: 'Failed: too many wrong codes. Add the address again.',
};
const METHOD_NAME = { email: 'Email', sms: 'SMS' };

const oob = {
  cur: null, // the enrollment on screen: {method, statusId, exchangeId, sub, token, destination}
  status: '', stop: null, attempts: 0,
  active: null, // {EMAIL: bool, SMS: bool} from config/list, once read
};

function oobAnnounce(msg) { $('oob-announce').textContent = msg; }

// oobError shows err under the card; data-code is its code.
function oobError(err) {
  showError('oob-error', err);
  const p = $('oob-error');
  if (err && typeof err !== 'string' && err.code !== 'cancelled') p.dataset.code = err.code || '';
  else delete p.dataset.code;
}

// methodActive reads config/list once and says whether the deployment sends codes by method.
async function methodActive(method, token) {
  if (!oob.active) {
    const list = await api('GET', '/verification-srv/config/list', undefined, token);
    oob.active = Object.fromEntries(list.map((m) => [m.verificationType, !!m.active]));
    const avail = $('oob-availability');
    avail.dataset.email = String(!!oob.active.EMAIL);
    avail.dataset.sms = String(!!oob.active.SMS);
    const off = ['EMAIL', 'SMS'].filter((m) => !oob.active[m]);
    avail.textContent = off.length ? `Not configured on this deployment: ${off.join(' and ')}.` : '';
  }
  return !!oob.active[method.toUpperCase()];
}

$('email-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('email');
  const email = input.value.trim();
  if (!/^[^\s@]+@[^\s@]+$/.test(email)) {
    input.setAttribute('aria-invalid', 'true');
    oobError('Enter an email address, like name@example.org.');
    return input.focus();
  }
  input.removeAttribute('aria-invalid');
  addAddress('email', { email }, $('email-add'), $('email-form'), 'To add an email address');
});

$('phone-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('phone');
  const phone = input.value.trim();
  const region = $('phone-region').value.trim().toUpperCase();
  if (!/^\+?[\d\s().\/-]{4,}$/.test(phone)) {
    input.setAttribute('aria-invalid', 'true');
    oobError('Enter a phone number: +49 151 … or, with a region, 0151 ….');
    return input.focus();
  }
  input.removeAttribute('aria-invalid');
  addAddress('sms', region ? { phone, region } : { phone }, $('phone-add'), $('phone-form'), 'To add a phone number');
});

// addAddress starts the enrollment of an address (body) by method, with step-up when the user
// has a factor already; the prompt shows under form.
function addAddress(method, body, button, form, why) {
  oobError(null);
  busy(button, async () => {
    try {
      const { sub, token } = await ensureToken();
      if (!await methodActive(method, token)) {
        throw new Problem(0, { detail: `this deployment sends no codes by ${METHOD_NAME[method]}`, code: 'method_inactive' });
      }
      const res = await withStepUp({ sub, token }, form, why,
        (headers) => api('POST', `/verification-srv/v2/setup/initiate/${method}`, body, token, headers));
      beginOob(res, method, sub, token);
    } catch (e) { oobError(e); }
  });
}

function stopOob() {
  if (oob.stop) oob.stop();
  oob.stop = null;
}

function beginOob(res, method, sub, token) {
  stopOob();
  const cur = { method, statusId: res.status_id, exchangeId: res.exchange_id.exchange_id, sub: res.sub || sub, token, destination: res.destination || '' };
  Object.assign(oob, { cur, status: '', attempts: 0 });
  $('oob-verify-form').dataset.attempts = '0';
  $('oob-code').value = '';
  $('oob-code').removeAttribute('aria-invalid');
  $('oob-code-label').textContent = method === 'email' ? 'Code from the email' : 'Code from the SMS';
  $('oob-done').hidden = true;
  showSent('oob-', cur.destination, `/verification-srv/v2/setup/resend/${method}`, token, cur.exchangeId);
  $('oob-flow').hidden = false;
  applyOob({ status: 'INITIATED', id: cur.statusId }, 'initiation');
  oobAnnounce(`Code sent to ${cur.destination}. Read it in the dev inbox and type it here.`);
  oob.stop = follow(cur.statusId, token,
    (s, source) => { if (cur === oob.cur) applyOob(s, source); },
    (msg) => { if (cur === oob.cur) $('oob-transport').textContent = msg; });
  $('oob-code').focus();
}

// applyOob shows a status of the enrollment on screen (initiation, stream, poll, enroll answer);
// terminal states never change.
function applyOob(s, source) {
  const cur = oob.cur;
  if (!cur || (s.id && s.id !== cur.statusId)) return;
  setDelivery('oob-', s.delivery);
  if (s.status === oob.status || TERMINAL.has(oob.status)) return;
  oob.status = s.status;
  const badge = $('oob-status');
  badge.dataset.status = s.status;
  badge.textContent = s.status;
  $('oob-status-text').textContent = OOB_TEXT[s.status] || '';
  if (s.status !== 'INITIATED') oobAnnounce(`${METHOD_NAME[cur.method]} enrollment ${s.status}. ${OOB_TEXT[s.status] || ''}`);
  const terminal = TERMINAL.has(s.status);
  $('oob-verify-form').hidden = terminal;
  for (const e of $('oob-verify-form').elements) e.disabled = terminal;
  if (!terminal) return;
  stopOob();
  hideSent('oob-');
  if (s.status !== 'ENROLLED') return;
  const done = $('oob-done');
  done.dataset.source = source;
  done.textContent = `Done! ${cur.destination} is a factor of ${cur.sub} now: sign in ${cur.method === 'email' ? 'by email' : 'by SMS'} below.`;
  done.hidden = false;
  loadDevices({ sub: cur.sub, token: cur.token });
}

$('oob-verify-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const cur = oob.cur;
  const input = $('oob-code');
  if (!cur) return;
  const code = typedCode(cur.method, input.value);
  if (!code) {
    input.setAttribute('aria-invalid', 'true');
    oobError(CODE_WANTED[cur.method]);
    return input.focus();
  }
  busy($('oob-verify'), async () => {
    try {
      const res = await api('POST', `/verification-srv/v2/setup/enroll/${cur.method}`, { exchange_id: cur.exchangeId, verification_code: code }, cur.token);
      if (cur !== oob.cur) return;
      input.removeAttribute('aria-invalid');
      oobError(null);
      applyOob(res, 'enroll');
    } catch (e) {
      if (cur !== oob.cur) return;
      input.setAttribute('aria-invalid', 'true');
      oobError(e);
      input.select();
    } finally {
      $('oob-verify-form').dataset.attempts = String(++oob.attempts);
    }
  });
});

// ---- sign-in with a code ------------------------------------------------------------------

const AUTH_TERMINAL = new Set(['AUTHENTICATED', 'DENIED', 'EXPIRED', 'CANCELLED', 'FAILED']);
const AUTH_TEXT = {
  INITIATED: 'Waiting for your code.',
  AUTHENTICATED: 'Authenticated.',
  EXPIRED: 'This sign-in expired before a code was accepted. Start again.',
  CANCELLED: 'This sign-in was cancelled. Start again.',
  FAILED: 'This sign-in failed. Start again.',
  DENIED: 'This sign-in was denied.',
};
const SIGNIN_HINT = {
  invalid_code: 'Wrong code. Check the code and try again.',
  code_replayed: 'This code was already used, wait for the next one.',
  no_factor: 'Nothing to sign in with for this user yet.',
  expired: 'This sign-in has expired; start a new one.',
  conflict: 'This sign-in is already finished, or does not take this kind of code; start a new one.',
  locked: 'Locked: too many wrong codes.',
};
const NO_FACTOR = {
  totp: 'This user has no authenticator app enrolled: enroll one above first.',
  backupcode: 'This user has no recovery codes: they are generated after the first enrollment.',
  email: 'This user has no email address enrolled: add one under “Codes by email or SMS” first.',
  sms: 'This user has no phone number enrolled: add one under “Codes by email or SMS” first.',
  webauthn: 'This user has no passkey: add one under “Passkeys” first, or pick another way.',
};
const CODE_WANTED = {
  totp: 'Enter the 6 digits your authenticator app shows.',
  backupcode: 'Enter one of your recovery codes.',
  email: 'Enter the code from the email (6 to 8 digits).',
  sms: 'Enter the code from the SMS (6 to 8 digits).',
};
const SIGNED_IN_WITH = { totp: 'an authenticator code', backupcode: 'a recovery code', email: 'a code sent by email', sms: 'a code sent by SMS' };

// typedCode is the code as the server takes it, or '' when it cannot be one of method's codes.
function typedCode(method, value) {
  const code = method === 'backupcode' ? value.trim() : value.replace(/\s/g, '');
  if (method === 'totp') return /^\d{6}$/.test(code) ? code : '';
  if (OOB.has(method)) return /^\d{6,8}$/.test(code) ? code : '';
  return code;
}

const auth = {
  cur: null, // {statusId, exchangeId, method, sub, token, mfaToken}
  status: '', es: null, pollTimer: 0, fallbackTimer: 0, lockTimer: 0, lockUntil: 0, attempts: 0,
};

function signinAnnounce(msg) { $('signin-announce').textContent = msg; }
function signinTransport(msg) { $('signin-transport').textContent = msg; }

function signinError(err) {
  const p = $('signin-error');
  if (!err) {
    p.hidden = true;
    delete p.dataset.code;
    return p.replaceChildren();
  }
  p.dataset.code = err.code || '';
  const hint = err.code === 'no_factor' ? NO_FACTOR[auth.cur?.method || methodChoice()] : SIGNIN_HINT[err.code];
  if (hint) {
    // The stable code picks the message; the server's detail is the fine print.
    p.replaceChildren(h('strong', {}, hint), ' ', h('span', { class: 'detail' }, err.message), ' (', h('code', { class: 'code-tag' }, err.code), ')');
  } else showError('signin-error', err);
  p.hidden = false;
}

const methodChoice = () => document.querySelector('input[name="signin-method"]:checked').value;

// setCodeInput makes the code field of a form (#{prefix}code, its label and hint) take a TOTP
// code or a recovery code: prefix 'signin-' for the sign-in, 'stepup-' for the step-up prompt.
function setCodeInput(method, prefix = 'signin-') {
  const input = $(`${prefix}code`);
  input.value = '';
  input.removeAttribute('aria-invalid');
  if (method === 'backupcode') {
    $(`${prefix}code-label`).textContent = 'Recovery code (XXXXX-XXXXX)';
    input.inputMode = 'text';
    input.autocomplete = 'off';
    input.maxLength = 16;
    input.classList.add('recovery-input');
    $(`${prefix}code-hint`).textContent = 'Each recovery code works once; it is spent when accepted.';
  } else if (OOB.has(method)) {
    $(`${prefix}code-label`).textContent = method === 'email' ? 'Code from the email' : 'Code from the SMS';
    input.inputMode = 'numeric';
    input.autocomplete = 'one-time-code';
    input.maxLength = 8;
    input.classList.remove('recovery-input');
    $(`${prefix}code-hint`).textContent = 'Each code works once, and only the newest one sent works.';
  } else {
    $(`${prefix}code-label`).textContent = '6-digit code from the app';
    input.inputMode = 'numeric';
    input.autocomplete = 'one-time-code';
    input.maxLength = 6;
    input.classList.remove('recovery-input');
    $(`${prefix}code-hint`).textContent = 'Each code works once: after using one, wait for the next.';
  }
}

function stopAuthWatching() {
  if (auth.es) auth.es.close();
  auth.es = null;
  clearTimeout(auth.pollTimer);
  clearTimeout(auth.fallbackTimer);
  auth.pollTimer = 0;
}

function locked() { return auth.lockUntil > Date.now(); }

// setSigninEnabled turns the sign-in controls on or off: off while locked, and the code form
// only while an authentication is pending.
function setSigninEnabled() {
  const lock = locked();
  $('signin-start').disabled = lock;
  const pending = !!auth.cur && !AUTH_TERMINAL.has(auth.status);
  for (const e of $('signin-form').elements) e.disabled = lock || !pending;
  // A finished sign-in takes no more codes: its form goes, as the enrollment's does.
  $('signin-form').hidden = $('signin-code-hint').hidden = !pending;
  $('signin-sent').hidden = !pending || !sent['signin-'];
}

$('signin-start-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  if (locked()) return;
  signinError(null);
  busy($('signin-start'), async () => {
    const method = methodChoice();
    try {
      const { sub, token } = await ensureToken();
      const res = await api('POST', `/verification-srv/authentication/${method}/initiation`, { usage_type: 'MULTIFACTOR_AUTHENTICATION' }, token);
      beginAuth(res, method, sub, token);
    } catch (e) {
      if (e.code === 'locked') lockFor(e.retryAfter); // the lock panel says it all
      else signinError(e);
    }
  }).then(setSigninEnabled);
});

function beginAuth(res, method, sub, token) {
  stopAuthWatching();
  auth.cur = { statusId: res.status_id, exchangeId: res.exchange_id.exchange_id, method, sub: res.sub || sub, token, mfaToken: '' };
  auth.status = '';
  auth.attempts = 0;
  $('signin-form').dataset.attempts = '0';
  $('signin-done').hidden = true;
  $('claims-header').textContent = $('claims-payload').textContent = '';
  setCodeInput(method);
  if (OOB.has(method)) showSent('signin-', res.destination, `/verification-srv/authentication/${method}/resend`, token, auth.cur.exchangeId);
  else hideSent('signin-');
  $('signin-flow').hidden = false;
  $('signin-start').textContent = 'Start a new sign-in';
  applyAuth({ status: 'INITIATED', id: res.status_id }, 'initiation');
  watchAuth();
  $('signin-code').focus();
}

// applyAuth shows a status of the authentication on screen; source says where it came from
// ("live" for the event stream, "poll" for the fallback).
function applyAuth(s, source) {
  const cur = auth.cur;
  if (!cur || (s.id && s.id !== cur.statusId)) return;
  if (s.mfa_token) cur.mfaToken = s.mfa_token;
  setDelivery('signin-', s.delivery);
  if (s.status === auth.status || AUTH_TERMINAL.has(auth.status)) return;
  auth.status = s.status;
  const badge = $('signin-status');
  badge.dataset.status = s.status;
  badge.textContent = s.status;
  $('signin-status-text').textContent = AUTH_TEXT[s.status] || '';
  signinAnnounce(`Sign-in ${s.status}. ${AUTH_TEXT[s.status] || ''}`);
  setSigninEnabled();
  if (!AUTH_TERMINAL.has(s.status)) return;
  stopAuthWatching();
  if (s.status !== 'AUTHENTICATED') return;
  signinError(null);
  const done = $('signin-done');
  done.dataset.source = source;
  $('signin-success').textContent = `Authenticated as ${s.sub || cur.sub} with ${SIGNED_IN_WITH[cur.method] || 'a code'}${source === 'live' ? ' (seen live)' : ''}.`;
  showClaims(cur.mfaToken, '');
  done.hidden = false;
  if (cur.method === 'backupcode' && recovery.owner && recovery.owner.sub === cur.sub) {
    loadRecovery(recovery.owner, false);
    refreshMfa(recovery.owner); // one recovery code fewer
  }
}

function watchAuth() {
  const cur = auth.cur;
  if (forcePoll || !('EventSource' in window)) return pollAuth();
  const es = new EventSource(`/verification-srv/verificationstatus/${path(cur.statusId)}/events?access_token=${encodeURIComponent(cur.token)}`);
  auth.es = es;
  signinTransport('Live updates: server-sent events (connecting…)');
  es.onopen = () => signinTransport('Live updates: server-sent events');
  es.addEventListener('status', (e) => { if (auth.es === es) applyAuth(JSON.parse(e.data), 'live'); });
  es.onerror = () => {
    if (auth.es !== es) return;
    if (es.readyState === EventSource.CLOSED) {
      es.close();
      auth.es = null;
      signinTransport(`Polling every ${POLL_MS / 1000} s (the event stream is unavailable)`);
      pollAuth();
    } else signinTransport('Live updates: reconnecting…');
  };
}

// pollAuth reads the status once and, while polling is the transport, schedules the next read.
async function pollAuth(once = false) {
  const cur = auth.cur;
  if (!cur) return;
  try {
    const s = await api('GET', `/verification-srv/verificationstatus/${path(cur.statusId)}`, undefined, cur.token);
    if (cur === auth.cur) applyAuth(s, 'poll');
  } catch (e) {
    if (cur === auth.cur && e.code !== 'too_many_requests') signinTransport(`Status check failed: ${e.message}`);
  }
  if (!once && !auth.es && cur === auth.cur && !AUTH_TERMINAL.has(auth.status)) auth.pollTimer = setTimeout(() => pollAuth(), POLL_MS);
}

$('signin-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const cur = auth.cur;
  const input = $('signin-code');
  if (!cur || locked()) return;
  const code = typedCode(cur.method, input.value);
  if (!code) {
    input.setAttribute('aria-invalid', 'true');
    signinError(null);
    showError('signin-error', CODE_WANTED[cur.method]);
    return input.focus();
  }
  busy($('signin-submit'), async () => {
    try {
      const res = await api('POST', `/verification-srv/authentication/${cur.method}/verification`, { exchange_id: cur.exchangeId, pass_code: code }, cur.token);
      if (cur !== auth.cur) return;
      if (res.mfa_token) cur.mfaToken = res.mfa_token;
      input.removeAttribute('aria-invalid');
      signinError(null);
      if (!AUTH_TERMINAL.has(auth.status)) {
        $('signin-status-text').textContent = 'Code accepted; waiting for the live status…';
        // The stream normally says AUTHENTICATED within milliseconds; if it does not, ask once.
        clearTimeout(auth.fallbackTimer);
        auth.fallbackTimer = setTimeout(() => { if (cur === auth.cur && !AUTH_TERMINAL.has(auth.status)) pollAuth(true); }, 3000);
      }
    } catch (e) {
      if (cur !== auth.cur) return;
      input.setAttribute('aria-invalid', 'true');
      if (e.code === 'locked') lockFor(e.retryAfter); // the lock panel says it all
      else signinError(e);
      if (e.code === 'expired' || e.code === 'conflict') pollAuth(true);
      input.select();
    } finally {
      $('signin-form').dataset.attempts = String(++auth.attempts);
    }
  }).then(setSigninEnabled);
});

// lockFor shows the lock and counts down from Retry-After; at 0 the form works again.
function lockFor(seconds) {
  auth.lockUntil = Date.now() + Math.max(1, seconds || 60) * 1000;
  clearInterval(auth.lockTimer);
  signinError(null);
  $('lock').hidden = false;
  const tick = () => {
    const left = Math.max(0, Math.ceil((auth.lockUntil - Date.now()) / 1000));
    const t = $('lock-countdown');
    t.textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, '0')}`;
    t.dateTime = `PT${left}S`;
    t.dataset.seconds = String(left);
    if (left > 0) return;
    clearInterval(auth.lockTimer);
    auth.lockUntil = 0;
    $('lock').hidden = true;
    refreshLockedUntil();
    signinError(null);
    setSigninEnabled();
    signinAnnounce('The lock is over: you can try a code again.');
    if (!$('signin-code').disabled) $('signin-code').focus();
    else $('signin-start').focus();
  };
  tick();
  auth.lockTimer = setInterval(tick, 250);
  refreshLockedUntil();
  setSigninEnabled();
  signinAnnounce(`Locked after too many wrong codes. Try again in ${Math.ceil((auth.lockUntil - Date.now()) / 1000)} seconds.`);
}

// ---- sign-in with push --------------------------------------------------------------------
// The page starts a push sign-in and shows the two-digit number; the phone (a push-capable
// device: the companion enrolled with --device and kept running with `listen`) shows three
// candidates and the user picks the same one. The status is followed live like any other.

const PUSH_STEPS = ['INITIATED', 'PUSH_ACKNOWLEDGED', 'ALLOWED', 'AUTHENTICATED'];
const PUSH_LABEL = {
  INITIATED: 'Waiting for the phone', PUSH_ACKNOWLEDGED: 'The phone got it', ALLOWED: 'Approved',
  AUTHENTICATED: 'Authenticated', DENIED: 'Denied', EXPIRED: 'Expired', CANCELLED: 'Cancelled', FAILED: 'Failed',
};
const pushText = (status, n) => ({
  INITIATED: 'Waiting for the phone: is the companion listening?',
  PUSH_ACKNOWLEDGED: `The phone got it: pick ${n} there and approve.`,
  ALLOWED: 'Approved on the phone; finishing the sign-in…',
  AUTHENTICATED: 'Authenticated.',
  DENIED: 'Denied on the phone.',
  EXPIRED: 'Expired: the phone did not answer in time.',
  CANCELLED: 'Cancelled.',
  FAILED: 'Failed.',
}[status] || '');
const PUSH_OUTCOME = {
  DENIED: 'Denied: the sign-in was refused on the phone, or another number was picked there. Nobody is signed in. If you did not start it, choosing “not me” on the phone reports it.',
  EXPIRED: 'Expired: nobody answered on the phone in time. Is the companion listening? Send a new push to try again.',
  CANCELLED: 'Cancelled: a newer push replaced this one (only one push per user is pending at a time), or it was cancelled here.',
  FAILED: 'Failed: this sign-in cannot finish. Send a new push to try again.',
};
const PUSH_HINT = {
  no_factor: 'This user has no push-capable device: enroll one with the companion and --device (see above).',
  locked: 'Locked: too many wrong codes or numbers for this user.',
  too_many_requests: 'Too many pushes for this user in the last 10 minutes (a defence against prompt bombing).',
};

const push = {
  cur: null, // {statusId, sub, token, number, mfaToken}
  status: '', reached: -1, seen: new Set(), stop: null,
  devices: null, // {sub, list}: the push-capable devices of the last device list
  retryUntil: 0, retryTimer: 0,
};

function pushAnnounce(msg) { $('push-announce').textContent = msg; }
const pushPending = () => !!push.cur && !AUTH_TERMINAL.has(push.status);

// setPushDevices records which devices of sub can take a push (from the device list).
function setPushDevices(sub, list) {
  push.devices = { sub, list };
  updatePushControls();
}

// updatePushControls enables "Sign in with push" only for a user known to have a push-capable
// device, with no push pending and no Retry-After running, and keeps the commands in step with
// the user name.
function updatePushControls() {
  const sub = $('user').value.trim();
  const file = deviceFile(sub || 'alice');
  $('push-enroll-cmd').value = `go run ./mobile-bridge/cmd/companion enroll --qr qr.png --device ${file}`;
  $('push-listen-cmd').value = `go run ./mobile-bridge/cmd/companion listen --device ${file}`;
  const known = push.devices && push.devices.sub === sub ? push.devices.list : null;
  const avail = $('push-availability');
  avail.dataset.available = known ? String(known.length > 0) : 'unknown';
  if (!known) {
    avail.replaceChildren(h('strong', {}, `Push-capable devices of ${sub || 'this user'} are not known yet.`),
      ' Press Refresh under “Your devices”, or enroll one as below.');
  } else if (!known.length) {
    avail.replaceChildren(h('strong', {}, `${sub} has no push-capable device yet.`), ' Enroll one as below.');
  } else {
    const names = known.map((d) => d.friendly_name || 'Unnamed device');
    avail.replaceChildren(`${sub} has a push-capable device: `, h('strong', {}, names.join(', ')),
      '. Keep its companion listening, then sign in with push.');
  }
  $('push-help').hidden = !!known && known.length > 0;
  $('push-start').disabled = !known?.length || pushPending() || push.retryUntil > Date.now();
  $('push-cancel').hidden = !pushPending();
}

$('user').addEventListener('input', updatePushControls);

function pushError(err) {
  const p = $('push-error');
  if (!err) {
    p.hidden = true;
    delete p.dataset.code;
    return p.replaceChildren();
  }
  p.dataset.code = err.code || '';
  const hint = PUSH_HINT[err.code];
  if (!hint) return showError('push-error', err);
  const kids = [h('strong', {}, hint), ' ', h('span', { class: 'detail' }, err.message), ' (', h('code', { class: 'code-tag' }, err.code), ')'];
  if (err.retryAfter) kids.push(` Try again in ${waitText(err.retryAfter)}.`);
  p.replaceChildren(...kids);
  p.hidden = false;
}

const waitText = (s) => (s >= 120 ? `${Math.ceil(s / 60)} minutes` : `${s} seconds`);

// retryAfter keeps the push button off for a 429's Retry-After.
function retryAfter(seconds) {
  push.retryUntil = Date.now() + seconds * 1000;
  clearTimeout(push.retryTimer);
  push.retryTimer = setTimeout(() => {
    push.retryUntil = 0;
    updatePushControls();
    pushAnnounce('You can send a push again.');
  }, seconds * 1000);
}

$('push-start').addEventListener('click', () => {
  if (pushPending()) return; // one push at a time (a new one would cancel it on the server anyway)
  pushError(null);
  busy($('push-start'), async () => {
    let sub = '';
    try {
      const t = await ensureToken();
      sub = t.sub;
      // The context is what the phone shows the user next to the candidates.
      const res = await api('POST', '/verification-srv/authentication/push/initiation',
        { usage_type: 'MULTIFACTOR_AUTHENTICATION', context: { app: 'mfaflow demo page' } }, t.token);
      beginPush(res, t.sub, t.token);
    } catch (e) {
      if (e.code === 'no_factor' && sub) push.devices = { sub, list: [] };
      if (e.status === 429 && e.retryAfter) retryAfter(e.retryAfter);
      pushError(e);
      pushAnnounce(`Push not sent. ${PUSH_HINT[e.code] || e.message}`);
    }
  }).then(updatePushControls);
});

$('push-cancel').addEventListener('click', () => {
  const cur = push.cur;
  if (!pushPending()) return;
  busy($('push-cancel'), async () => {
    try { applyPush(await api('DELETE', `/verification-srv/verificationstatus/${path(cur.statusId)}`, undefined, cur.token), 'cancel'); }
    catch (e) { pushError(e); }
  }).then(updatePushControls);
});

function stopPush() {
  if (push.stop) push.stop();
  push.stop = null;
}

function beginPush(res, sub, token) {
  stopPush();
  const cur = { statusId: res.status_id, sub: res.sub || sub, token, number: String(res.number || ''), mfaToken: '' };
  Object.assign(push, { cur, status: '', reached: -1, seen: new Set() });
  $('push-number').textContent = cur.number;
  $('push-prompt').hidden = false;
  $('push-outcome').hidden = true;
  $('push-done').hidden = true;
  $('push-claims-header').textContent = $('push-claims-payload').textContent = '';
  $('push-flow').hidden = false;
  $('push-start').textContent = 'Send a new push';
  applyPush({ status: 'INITIATED', id: res.status_id }, 'initiation');
  pushAnnounce(`Push sent. Pick ${cur.number} on your phone.`);
  push.stop = follow(cur.statusId, token,
    (s, source) => { if (cur === push.cur) applyPush(s, source); },
    (msg) => { if (cur === push.cur) $('push-transport').textContent = msg; });
  $('h-push').focus();
}

// applyPush shows a status of the push sign-in; terminal states never change.
function applyPush(s, source) {
  const cur = push.cur;
  if (!cur || (s.id && s.id !== cur.statusId)) return;
  if (s.mfa_token) cur.mfaToken = s.mfa_token;
  if (s.status === push.status || AUTH_TERMINAL.has(push.status)) return;
  push.status = s.status;
  push.seen.add(s.status);
  push.reached = Math.max(push.reached, PUSH_STEPS.indexOf(s.status));
  const terminal = AUTH_TERMINAL.has(s.status);
  const badge = $('push-status');
  badge.dataset.status = s.status;
  badge.textContent = s.status;
  $('push-status-text').textContent = pushText(s.status, cur.number);
  renderSteps($('push-steps'), PUSH_STEPS, push.reached, push.seen, terminal);
  if (s.status !== 'INITIATED') pushAnnounce(`Push sign-in: ${PUSH_LABEL[s.status] || s.status}. ${pushText(s.status, cur.number)}`);
  updatePushControls();
  if (!terminal) return;
  stopPush();
  $('push-prompt').hidden = true; // the number has done its job
  const out = $('push-outcome');
  out.dataset.status = s.status;
  if (s.status === 'AUTHENTICATED') {
    out.className = 'outcome success';
    out.textContent = `Authenticated as ${s.sub || cur.sub} with a push approved on the phone${source === 'live' ? ' (seen live)' : ''}.`;
    showClaims(cur.mfaToken, 'push-');
    $('push-done').dataset.source = source;
    $('push-done').hidden = false;
  } else {
    out.className = 'outcome failure';
    out.textContent = PUSH_OUTCOME[s.status] || `${s.status}.`;
  }
  out.hidden = false;
  pushAnnounce(out.textContent);
  if (!$('push-start').disabled) $('push-start').focus();
}

// follow watches a status object live: server-sent events, or polling every 2 s when the stream
// cannot be opened (or with ?live=poll). It returns the function that stops watching.
function follow(statusId, token, onStatus, onTransport) {
  const url = `/verification-srv/verificationstatus/${path(statusId)}`;
  let es = null;
  let timer = 0;
  let stopped = false;
  const pollOnce = async () => {
    try {
      const s = await api('GET', url, undefined, token);
      if (!stopped) onStatus(s, 'poll');
    } catch (e) {
      if (!stopped && e.code !== 'too_many_requests') onTransport(`Status check failed: ${e.message}; retrying`);
    }
    if (!stopped) timer = setTimeout(pollOnce, POLL_MS);
  };
  const startPolling = (why) => {
    onTransport(`Polling every ${POLL_MS / 1000} s${why ? ` (${why})` : ''}`);
    pollOnce();
  };
  if (forcePoll || !('EventSource' in window)) startPolling();
  else {
    es = new EventSource(`${url}/events?access_token=${encodeURIComponent(token)}`);
    onTransport('Live updates: server-sent events (connecting…)');
    es.onopen = () => { if (!stopped) onTransport('Live updates: server-sent events'); };
    es.addEventListener('status', (e) => { if (!stopped) onStatus(JSON.parse(e.data), 'live'); });
    es.onerror = () => {
      if (stopped) return;
      if (es.readyState === EventSource.CLOSED) {
        es.close();
        es = null;
        startPolling('the event stream is unavailable');
      } else onTransport('Live updates: reconnecting…');
    };
  }
  return () => {
    stopped = true;
    if (es) es.close();
    clearTimeout(timer);
  };
}

updatePushControls();

// ---- passkeys (WebAuthn) ------------------------------------------------------------------
// The server hands out the options of a ceremony as JSON (public_key); the browser's JSON
// helpers turn them into what navigator.credentials takes, and credential.toJSON() turns the
// answer back. The browser refuses a ceremony whose RP ID (a domain name) is not this page's
// host, so on an IP address the card points to localhost instead of offering the buttons; where
// the deployment has passkeys off (config/list says WEBAUTHN is not active) it says so too.

const PASSKEY_TEXT = {
  INITIATED: 'Waiting for your browser: follow its prompt (fingerprint, face, screen lock or security key).',
  ENROLLED: 'Enrolled: the passkey is registered and signs you in below.',
  AUTHENTICATED: 'Authenticated.',
  CANCELLED: 'Cancelled: nothing was registered. Try again whenever you like.',
};
const PASSKEY_SIGNIN_CANCELLED = 'Cancelled: nobody was signed in. Try again whenever you like.';
// The codes the page gives the browser's DOMException names (shown as data-code).
const PASSKEY_BROWSER = {
  NotAllowedError: 'not_allowed', InvalidStateError: 'already_registered', SecurityError: 'security',
  NotSupportedError: 'not_supported', AbortError: 'aborted',
};
// isBrowserError tells an exception of the browser (a DOMException of navigator.credentials, a
// TypeError of the JSON helpers) from the server's problems.
const isBrowserError = (err) => !!err && typeof err === 'object' && !(err instanceof Problem) && !!err.name;

// browserProblem restates a browser exception as a Problem whose code says what it means.
const browserProblem = (err) => new Problem(0, { detail: err.message || err.name, code: PASSKEY_BROWSER[err.name] || 'browser' });

const PASSKEY_HINT = {
  not_allowed: 'The browser gave no passkey: its prompt was closed or timed out, or no passkey of this user is on this device.',
  already_registered: 'This authenticator holds a passkey of this user already.',
  security: 'The browser refused: this page’s address is not the one passkeys are bound to.',
  not_supported: 'No authenticator here can make a passkey of the kind asked for.',
  aborted: 'Stopped: a newer passkey request took its place.',
  browser: 'The browser could not finish the passkey request.',
  no_factor: 'This user has no passkey yet: add one first.',
  invalid_credential: 'The server did not accept what the authenticator answered.',
  method_inactive: 'Passkeys are off on this deployment.',
  locked: 'Locked: too many failed sign-ins.',
  expired: 'This passkey request has expired; start again.',
};

const passkey = {
  cur: null, // the ceremony on screen: {kind: 'add'|'signin', statusId, exchangeId, sub, token, abort}
  attempts: 0,
};

function passkeyAnnounce(msg) { $('passkey-announce').textContent = msg; }

// passkeyHost says why this page cannot run a passkey ceremony, or '' when it can (as far as
// the browser goes: the deployment's settings are config/list's to say).
function passkeyHost() {
  if (!window.PublicKeyCredential || !navigator.credentials) return 'browser';
  if (typeof PublicKeyCredential.parseCreationOptionsFromJSON !== 'function') return 'json';
  const host = location.hostname;
  if (/^\d+(\.\d+){3}$/.test(host) || host.startsWith('[')) return 'ip';
  return '';
}

// localhostURL is this page at localhost: where a dev stack's passkeys work.
function localhostURL() {
  const u = new URL(location.href);
  u.hostname = 'localhost';
  u.search = '';
  u.hash = '';
  return u.href;
}

// showPasskeyAvailability shows whether the buttons can work; active is config/list's word on
// WEBAUTHN (undefined while not read yet).
function showPasskeyAvailability(active) {
  const why = passkeyHost();
  const avail = $('passkey-availability');
  const usable = !why && active !== false;
  avail.dataset.available = why || active === false ? 'false' : active ? 'true' : 'unknown';
  avail.dataset.reason = why || (active === false ? 'inactive' : '');
  $('passkey-controls').hidden = !usable;
  // The step-up prompt offers a passkey where the buttons work.
  $('stepup-method-webauthn-label').hidden = !usable;
  if (!usable && $('stepup-method-webauthn').checked) {
    $('stepup-method-totp').checked = true;
    if (stepup.cur) setStepUpMethod();
  }
  if (usable) return avail.replaceChildren();
  if (why === 'ip') {
    const href = localhostURL();
    avail.replaceChildren(h('strong', {}, 'Passkeys are bound to a domain name, not to an IP address like this page’s: '),
      h('a', { href, id: 'passkey-localhost-link' }, `open ${href.replace(/\/$/, '')} for passkeys`), '.');
  } else if (why) {
    avail.replaceChildren(h('strong', {}, 'This browser cannot use passkeys here'),
      why === 'json' ? ': it lacks PublicKeyCredential.parseCreationOptionsFromJSON. Try a current Chrome, Edge, Firefox or Safari.' : '.');
  } else {
    avail.replaceChildren(h('strong', {}, 'Passkeys are off on this deployment'),
      ': its WebAuthn relying party must be a domain name (MFA_WEBAUTHN_RP_ID, MFA_WEBAUTHN_ORIGINS). The dev stack has them on by default: ',
      h('a', { href: 'http://localhost:8080/' }, 'open http://localhost:8080 for passkeys'), '.');
  }
}

// checkPasskeys reads config/list (once) with token and shows what it says about WEBAUTHN.
async function checkPasskeys(token) {
  if (passkeyHost()) return false;
  const active = await methodActive('webauthn', token);
  showPasskeyAvailability(active);
  return active;
}

// passkeyError shows err in the card: a Problem from the server, a DOMException from the
// browser, or a string; data-code is its code.
function passkeyError(err) {
  const p = $('passkey-error');
  delete p.dataset.code;
  if (!err || typeof err === 'string' || err.code === 'cancelled') return showError('passkey-error', err);
  if (isBrowserError(err)) err = browserProblem(err);
  const hint = PASSKEY_HINT[err.code];
  if (!hint) showError('passkey-error', err);
  else {
    p.replaceChildren(h('strong', {}, hint), ' ', h('span', { class: 'detail' }, err.message), ' (', h('code', { class: 'code-tag' }, err.code), ')');
    p.hidden = false;
  }
  p.dataset.code = err.code || '';
}

function passkeyStatus(status, text) {
  const badge = $('passkey-status');
  badge.dataset.status = status;
  badge.textContent = status;
  $('passkey-status-text').textContent = text ?? PASSKEY_TEXT[status] ?? '';
  $('passkey-flow').hidden = false;
}

// beginPasskey makes cur the ceremony on screen, stopping the one before (its browser prompt
// too), and clears what that one showed.
function beginPasskey(kind, res, sub, token) {
  endPasskey();
  const cur = { kind, statusId: res.status_id, exchangeId: res.exchange_id.exchange_id, sub: res.sub || sub, token, abort: new AbortController() };
  passkey.cur = cur;
  $('passkey-done').hidden = $('passkey-success').hidden = true;
  $('passkey-claims-header').textContent = $('passkey-claims-payload').textContent = '';
  passkeyStatus('INITIATED');
  passkeyAnnounce(PASSKEY_TEXT.INITIATED);
  return cur;
}

function endPasskey() {
  const cur = passkey.cur;
  passkey.cur = null;
  if (cur) cur.abort.abort();
}

// browserCeremony runs navigator.credentials (create or get) for cur. When the browser gives no
// credential the server's side is cancelled, so nothing stays pending, and the error rethrown.
async function browserCeremony(cur, run) {
  try {
    return await run(cur.abort.signal);
  } catch (e) {
    if (cur === passkey.cur) {
      api('DELETE', `/verification-srv/verificationstatus/${path(cur.statusId)}`, undefined, cur.token)
        .then((s) => {
          if (cur === passkey.cur && s?.status) passkeyStatus(s.status, s.status === 'CANCELLED' && cur.kind === 'signin' ? PASSKEY_SIGNIN_CANCELLED : undefined);
        }, () => {});
    }
    throw e;
  }
}

// passkeyRun runs a passkey action on button, with its errors in the card.
function passkeyRun(button, fn) {
  passkeyError(null);
  return busy(button, async () => {
    try { await fn(); } catch (e) {
      passkeyError(e);
      passkeyAnnounce(`Passkey: ${$('passkey-error').textContent}`);
    } finally {
      $('passkey-controls').dataset.attempts = String(++passkey.attempts);
    }
  });
}

// "Add a passkey": initiation (with step-up once the user has a factor) → create → enroll.
$('passkey-add-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  passkeyRun($('passkey-add'), async () => {
    const { sub, token } = await ensureToken();
    if (!await checkPasskeys(token)) return;
    const name = $('passkey-name').value.trim();
    const res = await withStepUp({ sub, token }, $('passkey-add-form'), 'To add a passkey',
      (headers) => api('POST', '/verification-srv/v2/setup/initiate/webauthn', name ? { friendly_name: name } : {}, token, headers));
    const cur = beginPasskey('add', res, sub, token);
    const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(res.public_key);
    const credential = await browserCeremony(cur, (signal) => navigator.credentials.create({ publicKey, signal }));
    if (cur !== passkey.cur) return;
    const st = await api('POST', '/verification-srv/v2/setup/enroll/webauthn',
      { exchange_id: cur.exchangeId, credential: credential.toJSON() }, token);
    if (cur !== passkey.cur) return;
    passkeyStatus(st.status);
    const done = $('passkey-success');
    done.textContent = `Done! A passkey of ${cur.sub} is registered${name ? ` as “${name}”` : ''}: sign in with it below.`;
    done.hidden = false;
    passkeyAnnounce(done.textContent);
    $('passkey-name').value = '';
    loadDevices({ sub: cur.sub, token });
    loadRecovery({ sub: cur.sub, token }, false);
  });
});

// "Sign in with a passkey": initiation → get → verification → AUTHENTICATED and the mfa_token.
$('passkey-signin').addEventListener('click', () => {
  passkeyRun($('passkey-signin'), async () => {
    const { sub, token } = await ensureToken();
    if (!await checkPasskeys(token)) return;
    const res = await api('POST', '/verification-srv/authentication/webauthn/initiation', { usage_type: 'MULTIFACTOR_AUTHENTICATION' }, token);
    const cur = beginPasskey('signin', res, sub, token);
    const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(res.public_key);
    const credential = await browserCeremony(cur, (signal) => navigator.credentials.get({ publicKey, signal }));
    if (cur !== passkey.cur) return;
    const out = await api('POST', '/verification-srv/authentication/webauthn/verification',
      { exchange_id: cur.exchangeId, credential: credential.toJSON() }, token);
    if (cur !== passkey.cur) return;
    passkeyStatus(out.status);
    if (out.status !== 'AUTHENTICATED') return;
    $('passkey-success').textContent = `Authenticated as ${out.sub || cur.sub} with a passkey.`;
    $('passkey-success').hidden = false;
    showClaims(out.mfa_token, 'passkey-');
    $('passkey-done').hidden = false;
    passkeyAnnounce($('passkey-success').textContent);
    loadDevices({ sub: cur.sub, token }); // "last used" moves
  });
});

showPasskeyAvailability();

// ---- mfa_token display --------------------------------------------------------------------

// b64urlJSON decodes one base64url part of a JWT into an object (UTF-8 JSON).
function b64urlJSON(part) {
  const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

// showClaims shows the header and the claims of an mfa_token in #{prefix}claims-header and
// #{prefix}claims-payload (prefix '' for the code sign-in, 'push-' for push).
function showClaims(token, prefix) {
  const header = $(`${prefix}claims-header`);
  const payload = $(`${prefix}claims-payload`);
  const parts = String(token || '').split('.');
  if (parts.length !== 3) {
    header.textContent = '';
    payload.textContent = token ? 'The mfa_token is not a JWT.' : 'No mfa_token was returned to this caller.';
    return;
  }
  try {
    header.textContent = JSON.stringify(b64urlJSON(parts[0]), null, 2);
    payload.textContent = JSON.stringify(b64urlJSON(parts[1]), null, 2);
  } catch {
    payload.textContent = 'The mfa_token could not be decoded.';
  }
}

// ---- the user's MFA state, and disabling MFA ----------------------------------------------
// GET /verification-srv/mfa says whether the user has MFA and with what; the panel reloads after
// every factor change (the device list, new recovery codes, a recovery code spent, a lockout).
// The default method is a PUT. Disabling MFA (DESIGN.md Part 3, after ITS) takes a fresh second
// factor (the step-up prompt, then X-MFA-Token) or a link mailed to the contact address, valid
// 15 minutes, that opens this page with ?token=…; the page then asks the same user to confirm.

const METHOD_LABEL = {
  TOTP: 'Authenticator app', BACKUPCODE: 'Recovery codes', PUSH: 'Push', EMAIL: 'Email', SMS: 'SMS', WEBAUTHN: 'Passkey',
};
const MFA_HINT = {
  no_contact: 'There is no email address to send the link to: add one under “Codes by email or SMS”, or give one with the user name above.',
  no_factor: 'This user has no factor of that method.',
  expired: 'This link has expired, was used already, or was sent to another user: ask for a new one with “Disable MFA”.',
};

const mfa = {
  owner: null, st: null, // whose state is on screen, and the state
  seq: 0, // the newest load or change; older answers are dropped
  timer: 0, next: null, // refreshMfa's coalescing
  link: new URLSearchParams(location.search).get('token') || '', // the emailed link's token
  attempts: 0,
};

function mfaAnnounce(msg) { $('mfa-announce').textContent = msg; }

// mfaProblem shows err in the element id, with the hints of this card; data-code is its code.
function mfaProblem(id, err) {
  const p = $(id);
  const hint = err && typeof err !== 'string' ? MFA_HINT[err.code] : '';
  if (!hint) showError(id, err);
  else {
    p.replaceChildren(h('strong', {}, hint), ' ', h('span', { class: 'detail' }, err.message), ' (', h('code', { class: 'code-tag' }, err.code), ')');
    p.hidden = false;
  }
  if (err && typeof err !== 'string' && err.code !== 'cancelled') p.dataset.code = err.code || '';
  else delete p.dataset.code;
}

// refreshMfa reloads the state of owner soon; calls close together make one request.
function refreshMfa(owner) {
  mfa.next = owner;
  clearTimeout(mfa.timer);
  mfa.timer = setTimeout(() => loadMfa(mfa.next), 50);
}

// refreshLockedUntil reloads the state of the user on the page: a lockout started or ended.
function refreshLockedUntil() {
  if (state.sub && state.token && state.sub === $('user').value.trim()) refreshMfa({ sub: state.sub, token: state.token });
}

// loadMfa shows the state of owner (default: the user named above).
async function loadMfa(owner) {
  const seq = ++mfa.seq;
  try {
    owner = owner || await ensureToken();
    if (seq !== mfa.seq) return;
    const st = await api('GET', '/verification-srv/mfa', undefined, owner.token);
    if (seq !== mfa.seq) return;
    mfaProblem('mfa-error', null);
    showMfa(owner, st);
  } catch (e) { if (seq === mfa.seq) mfaProblem('mfa-error', e); }
}

function showMfa(owner, st) {
  const changedUser = mfa.owner?.sub !== owner.sub;
  Object.assign(mfa, { owner, st });
  const methods = st.methods || [];
  $('h-mfa').textContent = `MFA state of ${owner.sub}`;
  $('mfa-empty').hidden = true;
  const facts = $('mfa-facts');
  facts.hidden = false;
  facts.dataset.enabled = String(!!st.enabled);
  facts.dataset.methods = methods.join(' ');
  facts.dataset.default = st.default_method || '';
  const badge = $('mfa-enabled');
  badge.dataset.enabled = String(!!st.enabled);
  badge.textContent = st.enabled ? 'Enabled' : 'Disabled';
  $('mfa-methods').textContent = methods.length ? methods.map((m) => METHOD_LABEL[m] || m).join(', ') : 'none';
  const sel = $('mfa-default');
  sel.replaceChildren(...(methods.length
    ? methods.map((m) => h('option', { value: m }, METHOD_LABEL[m] || m))
    : [h('option', { value: '' }, 'none')]));
  sel.value = st.default_method || methods[0] || '';
  sel.disabled = methods.length < 2; // one method: nothing to choose
  $('mfa-codes').textContent = String(st.recovery_codes_remaining ?? 0);
  const contact = $('mfa-contact');
  contact.dataset.contact = st.contact || '';
  contact.textContent = st.contact || 'none: add an email address, or give one with the user name';
  $('mfa-locked-row').hidden = !st.locked_until;
  $('mfa-locked').replaceChildren(st.locked_until ? when(st.locked_until) : '');
  // Disabling is offered while there is something to disable.
  $('disable').hidden = !st.enabled;
  if (!st.enabled || changedUser) {
    $('disable-choice').hidden = $('disable-sent').hidden = true;
    $('disable-row').hidden = false;
  }
  if (changedUser) $('disable-done').hidden = true;
}

$('mfa-refresh').addEventListener('click', () => busy($('mfa-refresh'), () => loadMfa()));

$('mfa-default').addEventListener('change', () => {
  const sel = $('mfa-default');
  const owner = mfa.owner;
  const before = mfa.st?.default_method || '';
  const method = sel.value;
  if (!owner || !method || method === before) return;
  const seq = ++mfa.seq;
  sel.disabled = true;
  api('PUT', '/verification-srv/mfa', { default_method: method }, owner.token).then((st) => {
    if (seq !== mfa.seq) return;
    mfaProblem('mfa-error', null);
    showMfa(owner, st);
    mfaAnnounce(`Default method: ${METHOD_LABEL[st.default_method] || st.default_method}.`);
  }, (e) => {
    if (seq !== mfa.seq) return;
    sel.value = before;
    sel.disabled = (mfa.st?.methods || []).length < 2;
    mfaProblem('mfa-error', e);
  });
});

$('disable-start').addEventListener('click', () => {
  mfaProblem('mfa-error', null);
  $('disable-done').hidden = true;
  $('disable-row').hidden = true;
  $('disable-choice').hidden = false;
  $('disable-stepup').focus();
});

function closeDisableChoice() {
  $('disable-choice').hidden = true;
  $('disable-row').hidden = false;
}

$('disable-keep').addEventListener('click', () => {
  closeDisableChoice();
  $('disable-start').focus();
});

// "Confirm with a second factor now": the step-up prompt, then the disable with X-MFA-Token.
$('disable-stepup').addEventListener('click', () => {
  const owner = mfa.owner;
  if (!owner) return;
  mfaProblem('mfa-error', null);
  busy($('disable-stepup'), async () => {
    try {
      const mfaToken = await confirmIdentity(owner, $('disable-choice'), 'To disable MFA');
      const st = await api('POST', '/verification-srv/mfa/disable', undefined, owner.token, { 'X-MFA-Token': mfaToken });
      disabled(owner, st);
    } catch (e) { mfaProblem('mfa-error', e); }
  });
});

// "Send me a confirmation link": 202, and a mail to the contact address.
$('disable-email').addEventListener('click', () => {
  const owner = mfa.owner;
  if (!owner) return;
  mfaProblem('mfa-error', null);
  busy($('disable-email'), async () => {
    try {
      const res = await api('POST', '/verification-srv/mfa/disable', undefined, owner.token);
      if (res.enabled === false) return disabled(owner, res); // done at once: nothing to confirm
      const left = Math.max(1, Math.round((Date.parse(res.expires_at) - Date.now() - state.skew) / 60000));
      const to = mfa.owner === owner && mfa.st?.contact ? mfa.st.contact : 'your email address';
      const text = $('disable-sent-text');
      text.dataset.expiresAt = res.expires_at;
      text.replaceChildren('Check your mail at ', h('strong', { class: 'mono destination' }, to),
        `; the link works for ${left} minute${left === 1 ? '' : 's'}.`);
      closeDisableChoice();
      $('disable-sent').hidden = false;
      mfaAnnounce(text.textContent);
    } catch (e) { mfaProblem('mfa-error', e); }
  });
});

// disabled shows the state after a disable that went through, and what it removed.
function disabled(owner, st) {
  ++mfa.seq; // an older load must not show the factors again
  closeDisableChoice();
  $('disable-sent').hidden = true;
  showMfa(owner, st);
  const done = $('disable-done');
  done.textContent = `MFA is off for ${owner.sub}: every factor and recovery code was removed.` +
    (st.contact ? ` A confirmation mail is on its way to ${st.contact}.` : '');
  done.hidden = false;
  mfaAnnounce(done.textContent);
  $('h-mfa').focus();
  loadDevices(owner);
  if (recovery.owner?.sub === owner.sub) loadRecovery(owner, false);
}

// ---- the emailed link: ?token=… --------------------------------------------------------------

// stripLinkToken takes the token out of the address bar (and the history entry): it works once,
// and a bookmark or a shared screenshot should not carry it.
function stripLinkToken() {
  const u = new URL(location.href);
  if (!u.searchParams.has('token')) return;
  u.searchParams.delete('token');
  history.replaceState(history.state, '', u.pathname + u.search + u.hash);
}

// linkWho says whose MFA the link disables: the user signed in on this page, or asks who.
function linkWho() {
  const sub = $('user').value.trim();
  const known = !!recallUser() && !!sub;
  $('disable-confirm-user-field').hidden = known;
  $('disable-confirm-who').textContent = known
    ? `Disable MFA for ${sub}? Every factor and recovery code is removed.`
    : 'Who asked for this link? Enter the user name to confirm: the link works only for that user.';
}

function openLinkConfirm() {
  const box = $('disable-confirm');
  box.hidden = false;
  linkWho();
  $('h-disable-confirm').focus();
  box.scrollIntoView({ block: 'center' });
  if (!$('disable-confirm-user-field').hidden) $('disable-confirm-user').focus();
  else loadMfa(); // the user sees what the link would disable
}

$('user').addEventListener('input', () => { if (!$('disable-confirm').hidden && mfa.link) linkWho(); });

$('disable-confirm-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const token = mfa.link;
  if (!token) return;
  const asked = !$('disable-confirm-user-field').hidden;
  const input = $('disable-confirm-user');
  if (asked) {
    const sub = input.value.trim();
    if (!sub) {
      input.setAttribute('aria-invalid', 'true');
      mfaProblem('disable-confirm-error', 'Enter the user name the link was sent for.');
      return input.focus();
    }
    input.removeAttribute('aria-invalid');
    $('user').value = sub; // that user is the one signed in on the page from now on
    updatePushControls();
  }
  busy($('disable-confirm-yes'), async () => {
    try {
      const owner = await ensureToken();
      const st = await api('POST', '/verification-srv/mfa/disable/confirm', { token }, owner.token);
      mfa.link = '';
      stripLinkToken();
      mfaProblem('disable-confirm-error', null);
      $('disable-confirm').hidden = true;
      disabled(owner, st);
    } catch (e) {
      if (e.code === 'expired') {
        // Nothing more this link can do: no button to press again, and no token in the address bar.
        mfa.link = '';
        stripLinkToken();
        $('disable-confirm-form').hidden = $('disable-confirm-user-hint').hidden = true;
        $('disable-confirm-who').textContent = 'MFA was not disabled.';
        loadMfa();
      }
      mfaProblem('disable-confirm-error', e);
    } finally {
      $('disable-confirm-form').dataset.attempts = String(++mfa.attempts);
    }
  });
});

$('disable-confirm-no').addEventListener('click', () => {
  mfa.link = '';
  stripLinkToken();
  $('disable-confirm').hidden = true;
  mfaAnnounce('MFA stays on. The link still works until it expires; ignore the mail if you did not ask for it.');
});

// On load: the user who signed in last on this browser is the one on the page; a link to
// confirm asks for them.
{
  const u = recallUser();
  if (u) {
    $('user').value = u.sub;
    $('user-email').value = u.email;
    updatePushControls();
  }
  if (mfa.link) openLinkConfirm();
  else if (u) loadMfa();
}
