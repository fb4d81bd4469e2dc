// The credential-ledger console: one script, no dependencies, served with a Content-Security-Policy
// that refuses inline scripts and styles and every other origin.
//
// Two rules hold throughout:
// - Everything shown is built with createElement and text nodes: no string from the service (a
//   credential's name, an error message, the OpenAPI document) is ever parsed as HTML.
// - The API key lives in `session.key` and nowhere else: not in storage, a cookie, the URL or a
//   log. Reloading the page forgets it.

// ---------------------------------------------------------------------------------------------
// DOM helpers

/** Creates an element. Attributes whose value is null, undefined or false are left out; `class`,
 *  `text` (its text content) and `on<event>` (a listener) are special. Children are nodes or
 *  strings (appended as text), nested arrays allowed. */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  appendChildren(node, children);
  return node;
}

function appendChildren(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
}

let lastId = 0;
function uniqueId(prefix) {
  lastId += 1;
  return `${prefix}-${lastId}`;
}

function muted(text) {
  return el('span', { class: 'muted', text });
}

function button(label, attributes = {}) {
  return el('button', { type: 'button', class: 'button', ...attributes }, label);
}

/** "The name…" for a sentence that starts in lower case; one that starts with a field's name
 *  (`grace_period must…`) keeps it as the API spells it. */
function capitalise(text) {
  if (!text || /^\S*_/.test(text)) return text;
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// ---------------------------------------------------------------------------------------------
// Formatting

const TIME_FORMAT = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric',
  hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short',
});
const SHORT_TIME_FORMAT = new Intl.DateTimeFormat(undefined, {
  month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});
const SHORT_TIME_WITH_YEAR_FORMAT = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
});
const DATE_FORMAT = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });
const RELATIVE_FORMAT = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });
const NUMBER_FORMAT = new Intl.NumberFormat();
const RELATIVE_UNITS = [
  ['year', 365 * 86400], ['month', 30 * 86400], ['week', 7 * 86400], ['day', 86400],
  ['hour', 3600], ['minute', 60], ['second', 1],
];

function formatTime(iso) {
  return TIME_FORMAT.format(new Date(iso));
}

/** Without seconds, and without the year when it is this year's. */
function formatShortTime(iso) {
  const date = new Date(iso);
  const format = date.getFullYear() === new Date().getFullYear() ? SHORT_TIME_FORMAT : SHORT_TIME_WITH_YEAR_FORMAT;
  return format.format(date);
}

/** "in 59 minutes", "3 days ago": truncated, so that a deadline is never announced as later than
 *  it is. */
function relativeTime(iso, now = Date.now()) {
  const seconds = (Date.parse(iso) - now) / 1000;
  for (const [unit, size] of RELATIVE_UNITS) {
    if (Math.abs(seconds) >= size || unit === 'second') {
      return RELATIVE_FORMAT.format(Math.trunc(seconds / size), unit);
    }
  }
  return '';
}

/** A <time> with the exact instant in `datetime` and `title`; `style` is `full`, `short`, `date`
 *  or `relative`. */
function timeElement(iso, style = 'full') {
  if (!iso) return muted('—');
  const shown = {
    full: formatTime,
    short: formatShortTime,
    date: (value) => DATE_FORMAT.format(new Date(value)),
    relative: (value) => capitalise(relativeTime(value)),
  }[style](iso);
  return el('time', { datetime: iso, title: iso }, shown);
}

function formatNumber(value) {
  return NUMBER_FORMAT.format(value);
}

function shortHash(hash) {
  return hash ? `${hash.slice(0, 12)}…` : '';
}

function shortUuid(uuid) {
  return uuid ? uuid.slice(0, 8) : '';
}

// ---------------------------------------------------------------------------------------------
// Session and API calls

/** The key, in this page's memory only. */
const session = { key: null };

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** POST /api/v1/<operation> with the session's key; resolves to the answer's `data`, rejects
 *  with an ApiError carrying the API's code and message. A key the service stops accepting in
 *  the middle of a session (revoked, expired) signs the page out. */
async function callApi(operation, body = {}, { key = session.key, signOutWhenRefused = true } = {}) {
  let response;
  try {
    response = await fetch(`/api/v1/${operation}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'X-Server-API-Key': key },
      body: JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch (error) {
    throw new ApiError(0, 'network_error', `The service could not be reached (${error.message}).`);
  }
  const envelope = await response.json().catch(() => null);
  if (response.ok && envelope && envelope.status === 'success') return envelope.data;
  const data = (envelope && envelope.data) || {};
  const error = new ApiError(
    response.status,
    data.code || `http_${response.status}`,
    data.message || `The service answered ${response.status} ${response.statusText}`.trim(),
  );
  if (signOutWhenRefused && session.key && response.status === 401) {
    signOut(`Your key is no longer accepted: ${error.message}.`);
  }
  throw error;
}

// ---------------------------------------------------------------------------------------------
// Shell: sign-in, navigation, routing

const main = document.getElementById('main');
const tabs = document.getElementById('tabs');
const sessionBar = document.getElementById('session');
const toastRegion = document.getElementById('toast');

const VIEWS = [
  { pattern: /^\/credentials$/, nav: 'credentials', render: renderCredentialsView },
  { pattern: /^\/history\/([0-9a-fA-F-]{36})$/, nav: 'credentials', render: renderHistoryView },
  { pattern: /^\/webhooks$/, nav: 'webhooks', render: renderWebhooksView },
  { pattern: /^\/ledger$/, nav: 'ledger', render: renderLedgerView },
  { pattern: /^\/reference$/, nav: 'reference', render: renderReferenceView },
];
const DEFAULT_ROUTE = '#/credentials';

/** Bumped on every render: answers that arrive for a view the person has left are dropped. */
let generation = 0;

/** The views a person may read before signing in: the API reference is documentation. */
const PUBLIC_PATHS = new Set(['/reference']);

/** What a view's asynchronous work needs: where to draw, and whether it is still shown. */
function viewContext(isPublic = false) {
  generation += 1;
  const mine = generation;
  return { root: main, isCurrent: () => mine === generation && (isPublic || session.key !== null) };
}

function route() {
  closeOpenDialogs();
  const path = location.hash.replace(/^#/, '');
  const isPublic = PUBLIC_PATHS.has(path);
  if (!session.key && !isPublic) {
    renderSignIn();
    return;
  }
  for (const view of VIEWS) {
    const match = view.pattern.exec(path);
    if (!match) continue;
    markActiveTab(view.nav);
    main.replaceChildren();
    // The sign-in's start time only counts for the credentials table it leads to.
    if (view.render !== renderCredentialsView) renderTiming.startedAt = null;
    view.render(viewContext(isPublic), match);
    return;
  }
  location.replace(DEFAULT_ROUTE);
}

function markActiveTab(name) {
  for (const tab of tabs.querySelectorAll('[data-nav]')) {
    if (tab.dataset.nav === name) tab.setAttribute('aria-current', 'page');
    else tab.removeAttribute('aria-current');
  }
}

function setSignedIn(signedIn) {
  tabs.hidden = !signedIn;
  sessionBar.hidden = !signedIn;
}

function signOut(message) {
  session.key = null;
  closeOpenDialogs();
  forgetServerData();
  setSignedIn(false);
  generation += 1;
  renderSignIn(message);
}

/** A page heading views start with; focused after navigation so that screen readers announce
 *  the new view. */
function viewHeader(title, { subtitle, actions = [] } = {}) {
  document.title = `${title} · credential-ledger console`;
  const heading = el('h1', { tabindex: '-1', class: 'view-title' }, title);
  queueMicrotask(() => {
    if (document.activeElement === document.body || document.activeElement === main || !main.contains(document.activeElement)) {
      if (!document.querySelector('dialog[open]')) heading.focus({ preventScroll: true });
    }
  });
  return el('div', { class: 'view-header' },
    el('div', { class: 'view-heading' }, heading, subtitle ? el('p', { class: 'view-subtitle' }, subtitle) : null),
    actions.length ? el('div', { class: 'view-actions' }, actions) : null,
  );
}

function renderSignIn(message) {
  setSignedIn(false);
  document.title = 'Sign in · credential-ledger console';
  const key = formField({
    label: 'API key',
    // A text field masked by CSS, not a password field: a browser offers to save what a password
    // field submitted, and a saved key would outlive this page in its password manager.
    control: el('input', {
      type: 'text', autocomplete: 'off', spellcheck: 'false', autocapitalize: 'off',
      placeholder: 'vml_…', class: 'input mono secret-input', 'data-lpignore': 'true',
    }),
    hint: 'An API key of the server, as `server create` or `credentials/create` printed it. It stays in this page’s memory: reloading or closing the page forgets it.',
    id: 'signin-key',
  });
  const submit = el('button', { type: 'submit', class: 'button primary block', id: 'signin-submit' }, 'Sign in');
  const form = el('form', { class: 'signin-card', novalidate: true, 'aria-labelledby': 'signin-title' },
    el('h1', { id: 'signin-title', class: 'signin-title' }, 'Sign in'),
    el('p', { class: 'muted' }, 'Manage the server’s credentials, webhooks and ledger.'),
    message ? el('p', { class: 'callout callout-warning', role: 'alert' }, message) : null,
    key.wrapper,
    submit,
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    signIn(key, submit);
  });
  main.replaceChildren(el('div', { class: 'signin-page' }, form));
  key.control.focus();
}

async function signIn(keyField, submit) {
  keyField.clearError();
  const candidate = keyField.control.value.trim();
  if (!candidate) {
    keyField.showError('Paste an API key.');
    return;
  }
  renderTiming.startedAt = performance.now();
  setBusy(submit, true, 'Signing in…');
  try {
    // The cheapest authenticated call: it proves the key is a live API key of a server.
    await callApi('events/head', {}, { key: candidate, signOutWhenRefused: false });
  } catch (error) {
    setBusy(submit, false);
    keyField.showError(error.message);
    return;
  }
  keyField.control.value = '';
  session.key = candidate;
  setSignedIn(true);
  // replaceState, not location.replace: that would fire hashchange and draw the view twice.
  if (!location.hash || location.hash === '#') history.replaceState(null, '', DEFAULT_ROUTE);
  route();
}

function setBusy(control, busy, busyLabel) {
  if (busy) {
    control.dataset.idleLabel = control.textContent;
    control.textContent = busyLabel;
    control.disabled = true;
    control.setAttribute('aria-busy', 'true');
  } else {
    if (control.dataset.idleLabel) control.textContent = control.dataset.idleLabel;
    control.disabled = false;
    control.removeAttribute('aria-busy');
  }
}

let toastTimer = null;
function toast(message) {
  toastRegion.textContent = message;
  toastRegion.classList.add('visible');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => toastRegion.classList.remove('visible'), 4000);
}

// ---------------------------------------------------------------------------------------------
// Forms and errors

/** A labelled control with a hint and a place for its error, tied together with aria. */
function formField({ label, control, hint, id = uniqueId('field') }) {
  control.id = id;
  const hintNode = hint ? el('p', { class: 'field-hint', id: `${id}-hint` }, renderInlineMarkdown(hint)) : null;
  const error = el('p', { class: 'field-error', id: `${id}-error`, hidden: true });
  control.setAttribute('aria-describedby', [hintNode && hintNode.id, error.id].filter(Boolean).join(' '));
  const wrapper = el('div', { class: 'field' }, el('label', { for: id, class: 'field-label' }, label), control, hintNode, error);
  return {
    wrapper,
    control,
    showError(message) {
      error.textContent = capitalise(message);
      error.hidden = false;
      control.setAttribute('aria-invalid', 'true');
      control.focus();
    },
    clearError() {
      error.hidden = true;
      error.replaceChildren();
      control.removeAttribute('aria-invalid');
    },
  };
}

/** An error shown next to a button or a form's actions (for errors no single field caused). */
function inlineError(id = uniqueId('error')) {
  const node = el('p', { class: 'inline-error', id, role: 'alert', hidden: true });
  return {
    node,
    /** `extra`: nodes after the message, such as a link to what to do instead. */
    show(message, ...extra) {
      node.replaceChildren(el('span', {}, capitalise(message), extra.length ? ' ' : null, extra));
      node.hidden = false;
    },
    clear() {
      node.hidden = true;
      node.replaceChildren();
    },
  };
}

/** Shows an API error next to the control that caused it: `targets` maps error codes to fields,
 *  anything else lands in `fallback`. */
function showApiError(error, targets, fallback) {
  const target = targets[error.code] || fallback;
  target.showError ? target.showError(error.message) : target.show(error.message);
}

function selectControl(options, selected) {
  return el('select', { class: 'input' },
    options.map(([value, label]) => el('option', { value, selected: value === selected }, label)));
}

// ---------------------------------------------------------------------------------------------
// Dialogs (native <dialog>: modal, focus kept inside, Escape closes)

function openDialog({ title }) {
  const opener = document.activeElement;
  const openerKey = opener && opener.dataset ? opener.dataset.focusKey : undefined;
  const heading = el('h2', { id: uniqueId('dialog-title'), class: 'dialog-title' }, title);
  const body = el('div', { class: 'dialog-body' });
  const closeButton = el('button', { type: 'button', class: 'icon-button', 'aria-label': 'Close' }, '×');
  const dialog = el('dialog', { class: 'dialog', 'aria-labelledby': heading.id },
    el('div', { class: 'dialog-header' }, heading, closeButton), body);
  closeButton.addEventListener('click', () => dialog.close());
  dialog.addEventListener('close', () => {
    // A key shown once is gone with its panel, not left in a detached node.
    for (const secret of dialog.querySelectorAll('.secret-value')) secret.value = '';
    dialog.remove();
    restoreFocus(opener, openerKey);
  });
  document.body.append(dialog);
  dialog.showModal();
  return {
    dialog,
    body,
    setTitle(text) { heading.textContent = text; },
    close() { if (dialog.open) dialog.close(); },
  };
}

/** Back to the control that opened the dialog; if a refresh replaced it, to its successor. */
function restoreFocus(opener, openerKey) {
  if (opener && opener.isConnected) {
    opener.focus();
    return;
  }
  const successor = openerKey && document.querySelector(`[data-focus-key="${CSS.escape(openerKey)}"]`);
  if (successor) successor.focus();
  else {
    const heading = main.querySelector('h1');
    if (heading) heading.focus();
  }
}

function closeOpenDialogs() {
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close();
}

function dialogActions(...buttons) {
  return el('div', { class: 'dialog-actions' }, buttons);
}

/** The one time a key or a secret is shown: a warning, the value, and a copy button. */
function oneTimeSecret({ label, value, warning }) {
  const control = el('input', { type: 'text', readonly: true, class: 'input mono secret-value', id: 'one-time-secret', autocomplete: 'off', spellcheck: 'false' });
  control.value = value;
  control.addEventListener('focus', () => control.select());
  const copy = copyButton(() => control.value, { id: 'copy-secret', label: `Copy ${label.toLowerCase()}` });
  return el('div', { class: 'one-time' },
    el('div', { class: 'callout callout-warning secret-warning', role: 'note' },
      el('strong', {}, 'Copy it now: it will not be shown again. '), warning),
    el('label', { for: control.id, class: 'field-label' }, label),
    el('div', { class: 'secret-row' }, control, copy),
  );
}

/** A button that copies `text()` and says so, in its label and in the live region. */
function copyButton(text, { label = 'Copy', id } = {}) {
  const control = button(label, { class: 'button secondary copy-button', id });
  control.addEventListener('click', async () => {
    const copied = await copyToClipboard(text());
    control.textContent = copied ? 'Copied' : 'Copy failed';
    toast(copied ? 'Copied to the clipboard.' : 'The browser refused the clipboard: select the text and copy it by hand.');
    setTimeout(() => { control.textContent = label; }, 2000);
  });
  return control;
}

async function copyToClipboard(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Server data shared between views

const credentials = {
  rows: [],
  byUuid: new Map(),
  loaded: false,
  query: '',
  type: 'all',
  state: 'all',
  sortKey: null, // null: newest first (by id)
  sortDescending: false,
  page: 0,
  /** The latest load started: only its answer is kept. */
  load: 0,
};

const PAGE_SIZE = 100;
const EXPIRING_WITHIN_MS = 7 * 86400 * 1000;
const COLLATOR = new Intl.Collator(undefined, { sensitivity: 'base', numeric: true });

function forgetServerData() {
  credentials.rows = [];
  credentials.byUuid = new Map();
  credentials.loaded = false;
  // Loads still in flight belong to the server signed out of: their answers are dropped.
  credentials.load += 1;
  ledger.pages = [0];
  ledger.current = 0;
  ledger.load += 1;
  webhooks.endpoints = [];
  webhooks.endpoint = '';
  webhooks.load += 1;
}

/** The server's credentials, newly read. Of loads that overlap (the view's own and the reload
 *  after a change), the latest started is the one kept, whatever order the answers come in. */
async function loadCredentials() {
  const load = ++credentials.load;
  const rows = await callApi('credentials/list', {});
  if (load !== credentials.load) return credentials.rows;
  for (const row of rows) {
    // Computed once per load, so that filtering and sorting 10,000 rows stays cheap.
    row.searchText = `${row.name}\n${row.uuid}`.toLowerCase();
    row.expiresMs = row.expires_at ? Date.parse(row.expires_at) : null;
    row.lastUsedMs = row.last_used_at ? Date.parse(row.last_used_at) : null;
  }
  credentials.rows = rows;
  credentials.byUuid = new Map(rows.map((row) => [row.uuid, row]));
  credentials.loaded = true;
  return rows;
}

/** Names for views that show uuids; a failure only costs the names. */
async function loadCredentialNames() {
  if (credentials.loaded) return;
  try {
    await loadCredentials();
  } catch {
    // Shown as uuids.
  }
}

function credentialLabel(uuid) {
  const row = credentials.byUuid.get(uuid);
  return row ? row.name : `credential ${shortUuid(uuid)}`;
}

function historyLink(uuid, { label = credentialLabel(uuid), link } = {}) {
  return el('a', { href: `#/history/${uuid}`, class: 'credential-link', 'data-link': link, title: uuid }, label);
}

/** A link along a rotation chain, where both ends usually share a name: the uuid tells them apart. */
function chainLink(uuid, link) {
  return el('span', { class: 'chain-link' }, historyLink(uuid, { link }), ' ', el('span', { class: 'mono muted small' }, shortUuid(uuid)));
}

// ---------------------------------------------------------------------------------------------
// Credentials view

const STATES = {
  active: { rank: 0, label: () => 'Active' },
  expires: { rank: 1, label: (row) => `Expires ${DATE_FORMAT.format(new Date(row.expires_at))}` },
  expiring: { rank: 2, label: (row) => `Expiring ${relativeTime(row.expires_at)}` },
  grace: { rank: 3, label: (row) => `In grace until ${formatShortTime(row.expires_at)}` },
  held: { rank: 4, label: () => 'Held' },
};

/** `held` from the deadline on, as the service decides, even before the lock is recorded. */
function credentialState(row, now) {
  if (row.hold || (row.expiresMs !== null && row.expiresMs <= now)) return 'held';
  if (row.expiresMs === null) return 'active';
  // Replaced in a rotation with a grace period: the deadline ends the grace, not an expiry.
  if (row.replaced_by) return 'grace';
  return row.expiresMs - now <= EXPIRING_WITHIN_MS ? 'expiring' : 'expires';
}

function stateBadge(row, state) {
  return el('span', { class: `badge badge-${state}`, title: row.expires_at || null },
    el('span', { class: 'badge-dot', 'aria-hidden': 'true' }), STATES[state].label(row));
}

const STATE_FILTERS = [
  ['all', 'Any state'],
  ['active', 'Active, no deadline'],
  ['deadline', 'Expiring or in grace'],
  ['held', 'Held'],
];

function matchesStateFilter(state, filter) {
  if (filter === 'all') return true;
  if (filter === 'deadline') return state === 'expires' || state === 'expiring' || state === 'grace';
  return state === filter;
}

const SORTS = {
  name: { compare: (a, b) => COLLATOR.compare(a.name, b.name) },
  type: { compare: (a, b) => a.type.localeCompare(b.type) },
  state: { compare: (a, b) => STATES[a.state].rank - STATES[b.state].rank },
  expires: { compare: (a, b) => a.expiresMs - b.expiresMs, optional: 'expiresMs' },
  lastUsed: { compare: (a, b) => a.lastUsedMs - b.lastUsedMs, optional: 'lastUsedMs' },
};

/** A comparator for the chosen column. Rows without a value (no deadline, never used) sort last
 *  in both directions, so that "Expires" shows the next deadlines first; ties go by id. */
function rowComparator(key, descending) {
  const { compare, optional } = SORTS[key];
  const direction = descending ? -1 : 1;
  return (a, b) => {
    if (optional) {
      const missing = (a[optional] === null) - (b[optional] === null);
      if (missing) return missing;
      if (a[optional] === null) return a.id - b.id;
    }
    return direction * compare(a, b) || a.id - b.id;
  };
}

function filteredRows(now) {
  const query = credentials.query.trim().toLowerCase();
  const rows = [];
  for (const row of credentials.rows) {
    if (query && !row.searchText.includes(query)) continue;
    if (credentials.type !== 'all' && row.type !== credentials.type) continue;
    row.state = credentialState(row, now);
    if (!matchesStateFilter(row.state, credentials.state)) continue;
    rows.push(row);
  }
  if (credentials.sortKey) rows.sort(rowComparator(credentials.sortKey, credentials.sortDescending));
  else rows.sort((a, b) => b.id - a.id);
  return rows;
}

/** The time from sign-in (or from opening the view) to the first rows on screen, exposed on
 *  <body> for the browser tests. */
const renderTiming = { startedAt: null };

function renderCredentialsView(context) {
  if (renderTiming.startedAt === null) renderTiming.startedAt = performance.now();
  const parts = {
    summary: el('p', { class: 'table-summary', id: 'credentials-summary', 'aria-live': 'polite' }, 'Loading credentials…'),
    tableHost: el('div', { class: 'table-host' }),
    pager: el('div', { class: 'pager', hidden: true }),
  };
  credentialsView.context = context;
  credentialsView.parts = parts;
  const newButton = button('New credential', { class: 'button primary', 'data-focus-key': 'new-credential', onclick: openCreateDialog });
  const header = viewHeader('Credentials', {
    subtitle: 'Every key of this server. Names open a credential’s history.',
    actions: [newButton],
  });
  header.querySelector('h1').id = 'credentials-title';
  context.root.append(el('section', { class: 'view', 'aria-labelledby': 'credentials-title' },
    header,
    credentialsToolbar(() => renderCredentialsTable(parts)),
    parts.summary,
    parts.tableHost,
    parts.pager));
  reloadCredentials();
}

/** The credentials view on screen (its context and the parts a redraw replaces), so that
 *  dialogs can refresh it after a change. */
const credentialsView = { context: null, parts: null };

function credentialsViewShown() {
  return credentialsView.context !== null && credentialsView.context.isCurrent();
}

async function reloadCredentials() {
  try {
    await loadCredentials();
  } catch (error) {
    if (!credentialsViewShown()) return;
    const { summary, tableHost } = credentialsView.parts;
    summary.textContent = '';
    tableHost.replaceChildren(errorPanel(`The credentials could not be loaded: ${error.message}`, reloadCredentials));
    return;
  }
  if (credentialsViewShown()) renderCredentialsTable(credentialsView.parts);
}

function credentialsToolbar(onChange) {
  const search = formField({
    label: 'Filter',
    control: el('input', { type: 'search', class: 'input', placeholder: 'Name or uuid', value: credentials.query, autocomplete: 'off' }),
    id: 'filter-query',
  });
  search.control.addEventListener('input', () => {
    credentials.query = search.control.value;
    credentials.page = 0;
    onChange();
  });
  const type = formField({
    label: 'Type',
    control: selectControl([['all', 'Any type'], ['API', 'API'], ['SMTP', 'SMTP']], credentials.type),
    id: 'filter-type',
  });
  type.control.addEventListener('change', () => {
    credentials.type = type.control.value;
    credentials.page = 0;
    onChange();
  });
  const state = formField({
    label: 'State',
    control: selectControl(STATE_FILTERS, credentials.state),
    id: 'filter-state',
  });
  state.control.addEventListener('change', () => {
    credentials.state = state.control.value;
    credentials.page = 0;
    onChange();
  });
  return el('div', { class: 'toolbar', role: 'search', 'aria-label': 'Filter credentials' },
    el('div', { class: 'toolbar-grow' }, search.wrapper), type.wrapper, state.wrapper);
}

const COLUMNS = [
  { key: 'name', label: 'Name' },
  { key: 'type', label: 'Type' },
  { key: 'state', label: 'State' },
  { key: 'expires', label: 'Expires' },
  { key: 'lastUsed', label: 'Last used' },
  { key: null, label: 'Actions' },
];

function renderCredentialsTable({ summary, tableHost, pager }) {
  const focusKey = focusedKeyWithin([tableHost, pager]);
  drawCredentialsTable({ summary, tableHost, pager });
  if (focusKey) refocus(focusKey, tableHost);
  reportRenderTime();
}

/** The `data-focus-key` of the focused control, if it is inside one of `containers`: a redraw
 *  replaces it, and focus must not fall back to the top of the page. */
function focusedKeyWithin(containers) {
  const active = document.activeElement;
  if (!active || !containers.some((container) => container.contains(active))) return null;
  return active.dataset.focusKey || null;
}

/** The control with the same key after a redraw; for a row's button that is gone (a revoked
 *  credential has none), the row's name. */
function refocus(focusKey, fallbackContainer) {
  const [, uuid] = focusKey.split(':');
  const target = document.querySelector(`[data-focus-key="${CSS.escape(focusKey)}"]`)
    || (uuid && document.querySelector(`[data-focus-key="${CSS.escape(`history:${uuid}`)}"]`))
    || fallbackContainer.querySelector('.table-scroll');
  if (target) target.focus();
}

function drawCredentialsTable({ summary, tableHost, pager }) {
  const now = Date.now();
  const rows = filteredRows(now);
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
  credentials.page = Math.min(credentials.page, pages - 1);
  const first = credentials.page * PAGE_SIZE;
  const shown = rows.slice(first, first + PAGE_SIZE);

  summary.textContent = tableSummary(rows.length, first, shown.length);
  if (!shown.length) {
    tableHost.replaceChildren(emptyState(credentials.rows.length ? 'No credential matches the filter.' : 'This server has no credentials yet.'));
  } else {
    const body = el('tbody', {}, shown.map((row) => credentialRow(row, now)));
    tableHost.replaceChildren(el('div', { class: 'table-scroll', tabindex: '0', role: 'region', 'aria-labelledby': 'credentials-summary' },
      el('table', { class: 'table credentials-table', id: 'credentials-table' },
        el('caption', { class: 'visually-hidden' }, 'Credentials'),
        el('thead', {}, el('tr', {}, COLUMNS.map((column) => columnHeader(column, () => renderCredentialsTable({ summary, tableHost, pager }))))),
        body)));
  }
  renderPager(pager, pages, () => renderCredentialsTable({ summary, tableHost, pager }));
}

function tableSummary(total, first, count) {
  const all = credentials.rows.length;
  if (!total) return `No credential shown (${formatNumber(all)} in all).`;
  const range = total > count ? `${formatNumber(first + 1)}–${formatNumber(first + count)} of ` : '';
  const filtered = total !== all ? ` matching (${formatNumber(all)} in all)` : '';
  return `Showing ${range}${formatNumber(total)} credential${total === 1 ? '' : 's'}${filtered}.`;
}

function reportRenderTime() {
  if (renderTiming.startedAt === null) return;
  const startedAt = renderTiming.startedAt;
  renderTiming.startedAt = null;
  // After the next frame: the rows have been laid out and painted.
  requestAnimationFrame(() => setTimeout(() => {
    const measure = performance.measure('console:credentials-rendered', { start: startedAt });
    document.body.dataset.credentialsRenderedMs = String(Math.round(measure.duration));
    document.body.dataset.credentialsCount = String(credentials.rows.length);
  }, 0));
}

function columnHeader(column, redraw) {
  if (!column.key) return el('th', { scope: 'col' }, column.label);
  const active = credentials.sortKey === column.key;
  const direction = active ? (credentials.sortDescending ? 'descending' : 'ascending') : null;
  const sortButton = button([column.label, el('span', { class: 'sort-mark', 'aria-hidden': 'true' }, active ? (credentials.sortDescending ? '▼' : '▲') : '↕')], {
    class: 'sort-button',
    'data-focus-key': `sort:${column.key}`,
  });
  sortButton.addEventListener('click', () => {
    cycleSort(column.key);
    redraw();
  });
  return el('th', { scope: 'col', 'aria-sort': direction }, sortButton);
}

/** Ascending, descending, then back to the default order (newest first). */
function cycleSort(key) {
  if (credentials.sortKey !== key) {
    credentials.sortKey = key;
    credentials.sortDescending = false;
  } else if (!credentials.sortDescending) {
    credentials.sortDescending = true;
  } else {
    credentials.sortKey = null;
  }
  credentials.page = 0;
}

function credentialRow(row, now) {
  const state = row.state || credentialState(row, now);
  return el('tr', { 'data-uuid': row.uuid, 'data-state': state },
    el('th', { scope: 'row', class: 'cell-name', 'data-label': 'Name' },
      el('a', { href: `#/history/${row.uuid}`, class: 'name-link', 'data-focus-key': `history:${row.uuid}` }, row.name),
      el('span', { class: 'uuid mono' }, row.uuid)),
    el('td', { 'data-label': 'Type' }, el('span', { class: 'type-tag' }, row.type)),
    el('td', { 'data-label': 'State', class: 'cell-state' }, stateBadge(row, state)),
    el('td', { 'data-label': 'Expires' }, timeElement(row.expires_at, 'short')),
    el('td', { 'data-label': 'Last used' }, row.last_used_at ? timeElement(row.last_used_at, 'relative') : muted('Never')),
    el('td', { 'data-label': 'Actions', class: 'cell-actions' }, rowActions(row, state)),
  );
}

function rowActions(row, state) {
  if (state === 'held') return muted('—');
  return el('div', { class: 'row-actions' },
    button('Regenerate', {
      class: 'button small secondary', 'aria-label': `Regenerate ${row.name}`,
      'data-focus-key': `regenerate:${row.uuid}`, 'data-action': 'regenerate',
      onclick: () => openRegenerateDialog(row),
    }),
    button('Revoke', {
      class: 'button small danger-outline', 'aria-label': `Revoke ${row.name}`,
      'data-focus-key': `revoke:${row.uuid}`, 'data-action': 'revoke',
      onclick: () => openRevokeDialog(row),
    }));
}

function renderPager(pager, pages, redraw) {
  pager.hidden = pages <= 1;
  if (pages <= 1) return;
  const goTo = (page) => {
    credentials.page = page;
    redraw();
  };
  pager.replaceChildren(
    button('Previous', { class: 'button secondary small', disabled: credentials.page === 0, onclick: () => goTo(credentials.page - 1), 'data-focus-key': 'page-previous' }),
    el('span', { class: 'pager-state' }, `Page ${formatNumber(credentials.page + 1)} of ${formatNumber(pages)}`),
    button('Next', { class: 'button secondary small', disabled: credentials.page >= pages - 1, onclick: () => goTo(credentials.page + 1), 'data-focus-key': 'page-next' }),
  );
}

function emptyState(text) {
  return el('div', { class: 'empty-state' }, el('p', {}, text));
}

function errorPanel(message, retry) {
  return el('div', { class: 'callout callout-error', role: 'alert' },
    el('p', {}, message),
    retry ? button('Try again', { class: 'button secondary small', onclick: retry }) : null);
}

// -- Create

function openCreateDialog() {
  const dialog = openDialog({ title: 'New credential' });
  const name = formField({ label: 'Name', control: el('input', { type: 'text', class: 'input', autocomplete: 'off' }), hint: 'Up to 255 characters, for people: where the key is used.', id: 'create-name' });
  const type = formField({
    label: 'Type',
    control: selectControl([['SMTP', 'SMTP: mail relays check it'], ['API', 'API: calls this API']], 'SMTP'),
    id: 'create-type',
  });
  const expires = formField({
    label: 'Expires (optional)',
    control: el('input', { type: 'datetime-local', class: 'input' }),
    hint: `In your time zone (${Intl.DateTimeFormat().resolvedOptions().timeZone}). Empty: the key does not expire.`,
    id: 'create-expires',
  });
  const formError = inlineError('create-error');
  const submit = el('button', { type: 'submit', class: 'button primary', id: 'create-submit' }, 'Create credential');
  const form = el('form', { novalidate: true, class: 'form' },
    name.wrapper, type.wrapper, expires.wrapper, formError.node,
    dialogActions(button('Cancel', { class: 'button ghost', onclick: () => dialog.close() }), submit));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    for (const part of [name, type, expires]) part.clearError();
    formError.clear();
    const body = { name: name.control.value, type: type.control.value };
    if (expires.control.value) body.expires_at = new Date(expires.control.value).toISOString();
    setBusy(submit, true, 'Creating…');
    try {
      const created = await callApi('credentials/create', body);
      showCreatedKey(dialog, created);
      reloadCredentials();
    } catch (error) {
      setBusy(submit, false);
      showApiError(error, { invalid_name: name, invalid_type: type, invalid_expires_at: expires }, formError);
    }
  });
  dialog.body.append(form);
  name.control.focus();
}

function showCreatedKey(dialog, created) {
  dialog.setTitle('Credential created');
  const done = button('Done', { class: 'button primary', onclick: () => dialog.close() });
  dialog.body.replaceChildren(
    el('p', {}, 'The ', el('strong', {}, created.type), ' credential ', el('strong', { class: 'created-name' }, created.name), ' is live.',
      created.expires_at ? [' It expires ', timeElement(created.expires_at), '.'] : null),
    oneTimeSecret({
      label: 'Key',
      value: created.key,
      warning: 'The ledger keeps only its hash. If it is lost, regenerate the credential.',
    }),
    dialogActions(historyButton(dialog, created.uuid), done),
  );
  dialog.body.querySelector('#copy-secret').focus();
}

function historyButton(dialog, uuid) {
  return button('View history', {
    class: 'button ghost',
    onclick: () => {
      dialog.close();
      location.hash = `#/history/${uuid}`;
    },
  });
}

// -- Regenerate

const GRACE_CHOICES = [['0', 'Now'], ['3600', 'In 1 hour'], ['86400', 'In 1 day'], ['604800', 'In 7 days'], ['custom', 'Custom']];
const GRACE_UNITS = [['60', 'minutes'], ['3600', 'hours'], ['86400', 'days']];

function openRegenerateDialog(row) {
  const dialog = openDialog({ title: `Regenerate “${row.name}”` });
  const group = uniqueId('grace');
  const radios = GRACE_CHOICES.map(([value, label], index) => {
    const id = `${group}-${value}`;
    const input = el('input', { type: 'radio', name: group, value, id, checked: index === 1 });
    return { input, node: el('div', { class: 'choice' }, input, el('label', { for: id }, label)) };
  });
  const amount = formField({ label: 'Length', control: el('input', { type: 'number', min: '0', step: 'any', class: 'input', inputmode: 'decimal', value: '2' }), id: 'grace-amount' });
  const unit = formField({ label: 'Unit', control: selectControl(GRACE_UNITS, '3600'), id: 'grace-unit' });
  const custom = el('div', { class: 'custom-grace', hidden: true }, amount.wrapper, unit.wrapper,
    el('p', { class: 'field-hint' }, 'At most 30 days: the service refuses more, and says so here.'));
  for (const { input } of radios) {
    input.addEventListener('change', () => { custom.hidden = selectedGrace(radios) !== 'custom'; });
  }
  const actionError = inlineError('regenerate-error');
  const submit = el('button', { type: 'submit', class: 'button primary', id: 'regenerate-submit' }, 'Regenerate key');
  const form = el('form', { novalidate: true, class: 'form' },
    el('p', {}, 'A new key replaces this one, with the same name and type. Choose how long the old key keeps working, so that its users can move to the new one.'),
    el('fieldset', { class: 'choices' }, el('legend', { class: 'field-label' }, 'The old key stops working'), radios.map((radio) => radio.node)),
    custom,
    dialogActions(button('Cancel', { class: 'button ghost', onclick: () => dialog.close() }), submit),
    actionError.node,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    amount.clearError();
    actionError.clear();
    const choice = selectedGrace(radios);
    const gracePeriod = choice === 'custom' ? customGraceSeconds(amount.control.value, unit.control.value) : Number(choice);
    if (gracePeriod === null) {
      // An empty or odd custom length must not become 0: that would end the old key at once.
      amount.showError('Enter a length, such as 2 (hours) or 1.5 (days).');
      return;
    }
    setBusy(submit, true, 'Regenerating…');
    try {
      const rotated = await callApi('credentials/regenerate', { uuid: row.uuid, grace_period: gracePeriod });
      showRegeneratedKey(dialog, row, rotated);
      reloadCredentials();
    } catch (error) {
      setBusy(submit, false);
      // The row as last listed names the replacement, unless the rotation came from elsewhere since.
      const replacement = (credentials.byUuid.get(row.uuid) || row).replaced_by;
      if (error.code === 'credential_replaced' && replacement) {
        actionError.show(`${error.message}.`, historyLink(replacement, { label: 'Open the replacement’s history', link: 'replacement' }));
      } else {
        showApiError(error, { invalid_grace_period: choice === 'custom' ? amount : actionError }, actionError);
      }
    }
  });
  dialog.body.append(form);
  radios[1].input.focus();
}

/** Whole seconds, or null when the custom length is not a number of seconds from 0 up. */
function customGraceSeconds(amount, unitSeconds) {
  if (!amount.trim()) return null;
  const seconds = Number(amount) * Number(unitSeconds);
  return Number.isFinite(seconds) && seconds >= 0 && Number.isInteger(Math.round(seconds * 1e6) / 1e6) ? Math.round(seconds) : null;
}

function selectedGrace(radios) {
  const checked = radios.find(({ input }) => input.checked);
  return checked ? checked.input.value : '0';
}

function showRegeneratedKey(dialog, row, rotated) {
  dialog.setTitle('Key regenerated');
  const oldKey = rotated.old_expires_at
    ? el('p', { class: 'old-deadline', id: 'old-key-deadline' }, 'The old key keeps working until ', el('strong', {}, timeElement(rotated.old_expires_at)),
      ` (${relativeTime(rotated.old_expires_at)}), then it is locked.`)
    : el('p', { class: 'old-deadline', id: 'old-key-deadline' }, 'The old key stopped working now.');
  dialog.body.replaceChildren(
    el('p', {}, 'A new key for ', el('strong', {}, row.name), ' is live.'),
    oneTimeSecret({ label: 'New key', value: rotated.key, warning: 'Deploy it wherever the old key is used.' }),
    oldKey,
    dialogActions(historyButton(dialog, rotated.new_uuid), button('Done', { class: 'button primary', onclick: () => dialog.close() })),
  );
  dialog.body.querySelector('#copy-secret').focus();
}

// -- Revoke

function openRevokeDialog(row) {
  const dialog = openDialog({ title: `Revoke “${row.name}”?` });
  const actionError = inlineError('revoke-error');
  const confirm = button(`Revoke ${row.type} credential`, { class: 'button danger', id: 'revoke-confirm' });
  const cancel = button('Cancel', { class: 'button ghost', onclick: () => dialog.close() });
  confirm.addEventListener('click', async () => {
    actionError.clear();
    setBusy(confirm, true, 'Revoking…');
    try {
      await callApi('credentials/revoke', { uuid: row.uuid });
      dialog.close();
      toast(`“${row.name}” is revoked.`);
      reloadCredentials();
    } catch (error) {
      setBusy(confirm, false);
      actionError.show(error.message);
    }
  });
  dialog.body.append(
    el('p', {}, 'The key of ', el('strong', { class: 'revoke-name' }, row.name), ' stops working at once, even during a grace period or before its expiry. This cannot be undone.'),
    el('dl', { class: 'facts' }, fact('Type', row.type), fact('Uuid', el('span', { class: 'mono' }, row.uuid))),
    dialogActions(cancel, confirm),
    actionError.node,
  );
  cancel.focus();
}

function fact(term, ...details) {
  return el('div', { class: 'fact' }, el('dt', {}, term), el('dd', {}, details));
}

// ---------------------------------------------------------------------------------------------
// History view

const EVENT_TITLES = {
  CredentialCreated: 'Created',
  CredentialReplaced: 'Replaced, with a grace period',
  CredentialLocked: 'Locked',
};
const LOCK_REASONS = { revoked: 'revoked', rotated: 'rotated away', expired: 'expired' };

async function renderHistoryView(context, match) {
  const uuid = match[1].toLowerCase();
  const title = el('div', {}, viewHeader('History', { subtitle: 'Every event of this credential, oldest first: who, when, from where, and what changed.' }));
  const body = el('div', { class: 'history-body' }, el('p', { class: 'muted', 'aria-live': 'polite' }, 'Loading the history…'));
  context.root.append(el('section', { class: 'view' },
    el('a', { href: '#/credentials', class: 'back-link' }, '← Credentials'), title, body));
  let events;
  try {
    // The list read again, not the cached one: the summary's state must be the credential's now.
    [events] = await Promise.all([callApi('credentials/history', { uuid }), loadCredentials().catch(() => credentials.rows)]);
  } catch (error) {
    if (context.isCurrent()) body.replaceChildren(errorPanel(`The history could not be loaded: ${error.message}`, () => route()));
    return;
  }
  if (!context.isCurrent()) return;
  const created = events.find((event) => event.type === 'CredentialCreated');
  const name = credentials.byUuid.has(uuid) ? credentials.byUuid.get(uuid).name : created && created.data.name;
  if (name) {
    const heading = title.querySelector('h1');
    heading.textContent = name;
    document.title = `${name} · History · credential-ledger console`;
  }
  body.replaceChildren(historySummary(uuid, events), timeline(events));
}

function historySummary(uuid, events) {
  const row = credentials.byUuid.get(uuid);
  const created = events.find((event) => event.type === 'CredentialCreated');
  const replaces = created && created.data.replaces;
  const replacedBy = events.map((event) => event.data && event.data.replaced_by).filter(Boolean).pop();
  const facts = [
    fact('Uuid', el('span', { class: 'mono' }, uuid)),
    row ? fact('Type', row.type) : created ? fact('Type', created.data.type) : null,
    row ? fact('State', stateBadge(row, credentialState(row, Date.now()))) : null,
    replaces ? fact('Replaces', chainLink(replaces, 'summary-replaces')) : null,
    replacedBy ? fact('Replaced by', chainLink(replacedBy, 'summary-replaced-by')) : null,
  ];
  return el('dl', { class: 'facts summary-facts' }, facts);
}

function timeline(events) {
  if (!events.length) return emptyState('No events.');
  return el('ol', { class: 'timeline', 'aria-label': 'Events, oldest first' }, events.map(timelineEntry));
}

function timelineEntry(event) {
  return el('li', { class: `timeline-entry event-${event.type}`, 'data-position': event.position },
    el('div', { class: 'timeline-marker', 'aria-hidden': 'true' }),
    el('article', { class: 'timeline-card' },
      el('header', { class: 'timeline-header' },
        el('h2', { class: 'timeline-title' }, eventTitle(event)),
        timeElement(event.recorded_at)),
      el('div', { class: 'timeline-columns' },
        el('div', {},
          el('h3', { class: 'timeline-subtitle' }, 'Who and where'),
          el('dl', { class: 'facts compact' },
            provenance('By', actorElement(event.actor), 'actor'),
            provenance('When', el('span', { class: 'mono' }, event.recorded_at), 'recorded_at'),
            provenance('From', event.source_ip ? el('span', { class: 'mono' }, event.source_ip) : muted('— (no request)'), 'source_ip'),
            provenance('Request id', event.request_id ? el('span', { class: 'mono' }, event.request_id) : muted('—'), 'request_id'),
            provenance('Position', `#${event.position} · version ${event.stream_version}`, 'position'),
            provenance('Hash', el('span', { class: 'mono', title: event.hash }, shortHash(event.hash)), 'hash'))),
        el('div', {},
          el('h3', { class: 'timeline-subtitle' }, 'What changed'),
          el('dl', { class: 'facts compact' }, eventChanges(event))))));
}

function provenance(term, detail, field) {
  return el('div', { class: 'fact' }, el('dt', {}, term), el('dd', { 'data-field': field }, detail));
}

function eventTitle(event) {
  if (event.type === 'CredentialLocked') return `Locked: ${LOCK_REASONS[event.data.reason] || event.data.reason}`;
  if (event.type === 'CredentialCreated' && event.data.replaces) return 'Created, replacing a key';
  return EVENT_TITLES[event.type] || event.type;
}

function actorElement(actor) {
  if (!actor) return muted('unknown');
  if (actor.kind === 'credential') return el('span', {}, 'API key ', historyLink(actor.uuid, { link: 'actor' }));
  if (actor.kind === 'cli') return el('span', {}, 'The command line (', el('code', {}, 'credential-ledger'), ')');
  if (actor.kind === 'deadline') return el('span', {}, 'The service, at the deadline');
  return el('span', { class: 'mono' }, JSON.stringify(actor));
}

/** What the event changed, field by field; unknown event types show their data as JSON. */
function eventChanges(event) {
  const data = event.data || {};
  const rows = [];
  const add = (term, value, field) => rows.push(provenance(term, value, field));
  switch (event.type) {
    case 'CredentialCreated':
      add('Name', el('span', { class: 'literal' }, data.name), 'name');
      add('Type', data.type, 'type');
      if (data.hold) add('Held', 'from its creation', 'hold');
      if (data.key_prefix) add('Key', el('span', { class: 'mono' }, `${data.key_prefix}…`), 'key_prefix');
      if (data.expires_at) add('Expires', timeElement(data.expires_at), 'expires_at');
      if (data.replaces) add('Replaces', chainLink(data.replaces, 'replaces'), 'replaces');
      break;
    case 'CredentialReplaced':
      add('Replaced by', chainLink(data.replaced_by, 'replaced_by'), 'replaced_by');
      add('Old key works until', timeElement(data.locks_at), 'locks_at');
      break;
    case 'CredentialLocked':
      add('Reason', LOCK_REASONS[data.reason] || data.reason, 'reason');
      if (data.replaced_by) add('Replaced by', chainLink(data.replaced_by, 'replaced_by'), 'replaced_by');
      if (data.deadline) add('Deadline', timeElement(data.deadline), 'deadline');
      break;
    default:
      add('Data', el('pre', { class: 'code' }, JSON.stringify(data, null, 2)), 'data');
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Webhooks view

const DELIVERY_STATUSES = [['', 'Any status'], ['pending', 'Pending'], ['retrying', 'Retrying'], ['delivered', 'Delivered'], ['failed', 'Failed']];
/** The endpoints, the deliveries' filters, and the latest deliveries load (only its answer is
 *  drawn). */
const webhooks = { endpoints: [], endpoint: '', status: '', load: 0 };

function renderWebhooksView(context) {
  const endpointsHost = el('div', { class: 'table-host' }, muted('Loading endpoints…'));
  const deliveriesHost = el('div', { class: 'deliveries' });
  const filters = deliveryFilters(() => loadDeliveries(context, deliveriesHost));
  context.root.append(el('section', { class: 'view' },
    viewHeader('Webhooks', {
      subtitle: 'Signed CredentialLocked notifications: sent when a key is revoked, rotated away or expires.',
      actions: [button('Add endpoint', { class: 'button primary', 'data-focus-key': 'add-endpoint', onclick: () => openEndpointDialog(context, endpointsHost, filters) })],
    }),
    el('section', { class: 'panel', 'aria-labelledby': 'endpoints-title' },
      el('h2', { id: 'endpoints-title', class: 'panel-title' }, 'Endpoints'),
      endpointsHost),
    el('section', { class: 'panel', 'aria-labelledby': 'deliveries-title' },
      el('h2', { id: 'deliveries-title', class: 'panel-title', tabindex: '-1' }, 'Deliveries'),
      el('p', { class: 'muted' }, 'Every attempt, newest first (the latest 200).'),
      filters.node,
      deliveriesHost)));
  loadEndpoints(context, endpointsHost, filters).then(() => loadDeliveries(context, deliveriesHost));
}

async function loadEndpoints(context, host, filters) {
  try {
    webhooks.endpoints = await callApi('webhooks/list', {});
  } catch (error) {
    if (context.isCurrent()) host.replaceChildren(errorPanel(`The endpoints could not be loaded: ${error.message}`, () => loadEndpoints(context, host, filters)));
    return;
  }
  if (!context.isCurrent()) return;
  filters.setEndpoints(webhooks.endpoints);
  host.replaceChildren(webhooks.endpoints.length
    ? endpointsTable(context, host, filters)
    : emptyState('No endpoint yet. Add one to be told, with a signed request, whenever a credential is locked.'));
}

function endpointsTable(context, host, filters) {
  return el('div', { class: 'table-scroll', tabindex: '0', role: 'region', 'aria-label': 'Endpoints table' },
    el('table', { class: 'table endpoints-table' },
      el('thead', {}, el('tr', {}, ['URL', 'Description', 'Created', 'State', 'Actions'].map((label) => el('th', { scope: 'col' }, label)))),
      el('tbody', {}, webhooks.endpoints.map((endpoint) => endpointRow(context, endpoint, host, filters)))));
}

function endpointRow(context, endpoint, host, filters) {
  const state = endpoint.disabled_at
    ? el('span', { class: 'badge badge-held', title: endpoint.disabled_reason || null }, el('span', { class: 'badge-dot', 'aria-hidden': 'true' }), 'Disabled')
    : el('span', { class: 'badge badge-active' }, el('span', { class: 'badge-dot', 'aria-hidden': 'true' }), 'Active');
  const actions = el('div', { class: 'row-actions' },
    button('Deliveries', {
      class: 'button small secondary', 'aria-label': `Deliveries to ${endpoint.url}`,
      onclick: () => filters.showEndpoint(endpoint.uuid),
    }),
    button('Delete', {
      class: 'button small danger-outline', 'aria-label': `Delete ${endpoint.url}`,
      'data-focus-key': `delete-endpoint:${endpoint.uuid}`,
      onclick: () => openDeleteEndpointDialog(context, endpoint, host, filters),
    }));
  return el('tr', { 'data-uuid': endpoint.uuid },
    el('th', { scope: 'row', class: 'cell-name', 'data-label': 'URL' }, el('span', { class: 'mono break' }, endpoint.url), el('span', { class: 'uuid mono' }, endpoint.uuid)),
    el('td', { 'data-label': 'Description' }, endpoint.description || muted('—')),
    el('td', { 'data-label': 'Created' }, timeElement(endpoint.created_at, 'short')),
    el('td', { 'data-label': 'State' }, state),
    el('td', { 'data-label': 'Actions', class: 'cell-actions' }, actions));
}

function deliveryFilters(onChange) {
  const endpoint = formField({ label: 'Endpoint', control: selectControl([['', 'All endpoints']], ''), id: 'deliveries-endpoint' });
  const status = formField({ label: 'Status', control: selectControl(DELIVERY_STATUSES, webhooks.status), id: 'deliveries-status' });
  endpoint.control.addEventListener('change', () => { webhooks.endpoint = endpoint.control.value; onChange(); });
  status.control.addEventListener('change', () => { webhooks.status = status.control.value; onChange(); });
  const refresh = button('Refresh', { class: 'button secondary', id: 'deliveries-refresh', onclick: onChange });
  return {
    node: el('div', { class: 'toolbar' }, endpoint.wrapper, status.wrapper, el('div', { class: 'toolbar-end' }, refresh)),
    reload: onChange,
    setEndpoints(endpoints) {
      const options = [['', 'All endpoints'], ...endpoints.map((item) => [item.uuid, item.description ? `${item.description} (${item.url})` : item.url])];
      if (!endpoints.some((item) => item.uuid === webhooks.endpoint)) webhooks.endpoint = '';
      endpoint.control.replaceChildren(...options.map(([value, label]) => el('option', { value, selected: value === webhooks.endpoint }, label)));
    },
    showEndpoint(uuid) {
      webhooks.endpoint = uuid;
      endpoint.control.value = uuid;
      onChange();
      document.getElementById('deliveries-title').focus();
    },
  };
}

async function loadDeliveries(context, host) {
  const load = ++webhooks.load;
  // A quicker filter change, or a retry's reload, may answer first: only the latest is drawn.
  const isLatest = () => load === webhooks.load && context.isCurrent();
  const request = { limit: 200 };
  if (webhooks.endpoint) request.uuid = webhooks.endpoint;
  if (webhooks.status) request.status = webhooks.status;
  host.setAttribute('aria-busy', 'true');
  let attempts;
  try {
    attempts = await callApi('webhooks/deliveries', request);
  } catch (error) {
    if (!isLatest()) return;
    host.removeAttribute('aria-busy');
    host.replaceChildren(errorPanel(`The deliveries could not be loaded: ${error.message}`, () => loadDeliveries(context, host)));
    return;
  }
  if (!isLatest()) return;
  host.removeAttribute('aria-busy');
  const deliveries = groupAttempts(attempts);
  host.replaceChildren(deliveries.length
    ? el('ul', { class: 'delivery-list' }, deliveries.map((delivery) => deliveryCard(context, host, delivery)))
    : emptyState('No attempt matches. Attempts appear once a credential is locked and an endpoint was asked.'));
}

/** The attempts of each delivery, deliveries in the order of their newest attempt. */
function groupAttempts(attempts) {
  const byDelivery = new Map();
  for (const attempt of attempts) {
    if (!byDelivery.has(attempt.delivery_id)) byDelivery.set(attempt.delivery_id, []);
    byDelivery.get(attempt.delivery_id).push(attempt);
  }
  return [...byDelivery.values()].map((list) => ({
    id: list[0].delivery_id,
    latest: list[0],
    attempts: list.sort((a, b) => b.attempt - a.attempt),
  }));
}

function endpointLabel(uuid) {
  const endpoint = webhooks.endpoints.find((item) => item.uuid === uuid);
  return endpoint ? endpoint.url : `deleted endpoint ${shortUuid(uuid)}`;
}

function deliveryBadge(status) {
  const kind = { delivered: 'active', failed: 'held', retrying: 'expiring', pending: 'expires' }[status] || 'expires';
  return el('span', { class: `badge badge-${kind} delivery-status`, 'data-status': status },
    el('span', { class: 'badge-dot', 'aria-hidden': 'true' }), capitalise(status));
}

function deliveryCard(context, host, delivery) {
  const { latest } = delivery;
  const headingId = uniqueId('delivery');
  const retryError = inlineError();
  const badgeHost = el('span', {}, deliveryBadge(latest.delivery_status));
  const retry = latest.delivery_status === 'failed'
    ? button('Retry', { class: 'button small secondary retry-button', 'aria-describedby': headingId, 'data-delivery': delivery.id })
    : null;
  if (retry) {
    retry.addEventListener('click', async () => {
      retryError.clear();
      setBusy(retry, true, 'Retrying…');
      try {
        const answer = await callApi('webhooks/retry', { id: delivery.id });
        badgeHost.replaceChildren(deliveryBadge(answer.status));
        retry.remove();
        toast(`Delivery ${delivery.id} will be tried again.`);
        // The attempt is made at once in process; look again shortly to show it.
        for (const delay of [600, 2000]) setTimeout(() => { if (context.isCurrent()) loadDeliveries(context, host); }, delay);
      } catch (error) {
        setBusy(retry, false);
        retryError.show(error.message);
      }
    });
  }
  return el('li', { class: 'delivery', 'data-delivery': delivery.id },
    el('div', { class: 'delivery-header' },
      el('div', {},
        el('h3', { class: 'delivery-title', id: headingId }, `${latest.event_type} · delivery ${delivery.id}`),
        el('p', { class: 'muted small' }, 'To ', el('span', { class: 'mono break' }, endpointLabel(latest.endpoint_uuid)), ' · event ', el('span', { class: 'mono', title: latest.event_id }, shortUuid(latest.event_id)))),
      el('div', { class: 'delivery-state' }, badgeHost, retry)),
    retryError.node,
    el('div', { class: 'table-scroll flat', tabindex: '0', role: 'region', 'aria-labelledby': headingId },
      el('table', { class: 'table attempts-table' },
        el('caption', { class: 'visually-hidden' }, `Attempts of delivery ${delivery.id}`),
        el('thead', {}, el('tr', {}, ['Attempt', 'When', 'Answer', 'Error', 'Duration', 'Outcome', 'Next attempt'].map((label) => el('th', { scope: 'col' }, label)))),
        el('tbody', {}, delivery.attempts.map(attemptRow)))));
}

function attemptRow(attempt) {
  return el('tr', { 'data-attempt': attempt.attempt },
    el('th', { scope: 'row', 'data-label': 'Attempt' }, `#${attempt.attempt}`),
    el('td', { 'data-label': 'When' }, timeElement(attempt.attempted_at, 'full')),
    el('td', { 'data-label': 'Answer', class: 'mono' }, attempt.response_status === null || attempt.response_status === undefined ? muted('none') : String(attempt.response_status)),
    el('td', { 'data-label': 'Error', class: 'break' }, attempt.error || muted('—')),
    el('td', { 'data-label': 'Duration' }, `${formatNumber(attempt.duration_ms)} ms`),
    el('td', { 'data-label': 'Outcome' }, capitalise(attempt.outcome)),
    el('td', { 'data-label': 'Next attempt' }, attempt.next_attempt_at ? timeElement(attempt.next_attempt_at, 'full') : muted('—')));
}

function openEndpointDialog(context, host, filters) {
  const dialog = openDialog({ title: 'Add a webhook endpoint' });
  const url = formField({
    label: 'URL',
    control: el('input', { type: 'url', class: 'input', autocomplete: 'off', placeholder: 'https://hooks.example.com/ledger' }),
    hint: 'An `http` or `https` URL the service will POST each CredentialLocked to.',
    id: 'endpoint-url',
  });
  const description = formField({ label: 'Description (optional)', control: el('input', { type: 'text', class: 'input', autocomplete: 'off' }), id: 'endpoint-description' });
  const formError = inlineError('endpoint-error');
  const submit = el('button', { type: 'submit', class: 'button primary', id: 'endpoint-submit' }, 'Add endpoint');
  const form = el('form', { novalidate: true, class: 'form' }, url.wrapper, description.wrapper, formError.node,
    dialogActions(button('Cancel', { class: 'button ghost', onclick: () => dialog.close() }), submit));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    url.clearError();
    description.clearError();
    formError.clear();
    const body = { url: url.control.value.trim() };
    if (description.control.value.trim()) body.description = description.control.value.trim();
    setBusy(submit, true, 'Adding…');
    try {
      const endpoint = await callApi('webhooks/create', body);
      showEndpointSecret(dialog, endpoint);
      loadEndpoints(context, host, filters);
    } catch (error) {
      setBusy(submit, false);
      showApiError(error, { invalid_url: url, url_not_allowed: url, invalid_description: description }, formError);
    }
  });
  dialog.body.append(form);
  url.control.focus();
}

function showEndpointSecret(dialog, endpoint) {
  dialog.setTitle('Endpoint added');
  dialog.body.replaceChildren(
    el('p', {}, 'Deliveries to ', el('strong', { class: 'mono break' }, endpoint.url), ' are signed with this secret (Standard Webhooks).'),
    oneTimeSecret({ label: 'Signing secret', value: endpoint.secret, warning: 'Store it with the receiver: it verifies every request’s signature.' }),
    dialogActions(button('Done', { class: 'button primary', onclick: () => dialog.close() })),
  );
  dialog.body.querySelector('#copy-secret').focus();
}

function openDeleteEndpointDialog(context, endpoint, host, filters) {
  const dialog = openDialog({ title: 'Delete this endpoint?' });
  const actionError = inlineError('delete-endpoint-error');
  const cancel = button('Cancel', { class: 'button ghost', onclick: () => dialog.close() });
  const confirm = button('Delete endpoint', { class: 'button danger', id: 'delete-endpoint-confirm' });
  confirm.addEventListener('click', async () => {
    actionError.clear();
    setBusy(confirm, true, 'Deleting…');
    try {
      await callApi('webhooks/delete', { uuid: endpoint.uuid });
      dialog.close();
      toast('The endpoint is deleted.');
      // What it was still owed is now failed, and the filter may have named it: both are redrawn.
      loadEndpoints(context, host, filters).then(() => filters.reload());
    } catch (error) {
      setBusy(confirm, false);
      actionError.show(error.message);
    }
  });
  dialog.body.append(
    el('p', {}, 'Nothing more will be sent to ', el('strong', { class: 'mono break' }, endpoint.url), '. What it is still owed becomes failed; its past attempts stay listed.'),
    dialogActions(cancel, confirm),
    actionError.node);
  cancel.focus();
}

// ---------------------------------------------------------------------------------------------
// Ledger view

const LEDGER_PAGE_SIZE = 50;
/** `after_position` of each page seen, so that "Previous" goes back exactly; the page shown,
 *  which a return to the view shows again; and the latest load, whose answer alone is drawn. */
const ledger = { pages: [0], current: 0, load: 0 };

function renderLedgerView(context) {
  const headHost = el('div', { class: 'head-card' }, muted('Loading the chain head…'));
  const eventsHost = el('div', {});
  const pager = el('div', { class: 'pager' });
  context.root.append(el('section', { class: 'view' },
    viewHeader('Ledger', { subtitle: 'The server’s events, in log order, each linked to the one before by its hash.' }),
    el('section', { class: 'panel', 'aria-labelledby': 'head-title' },
      el('h2', { class: 'panel-title', id: 'head-title' }, 'Chain head'),
      headHost),
    el('section', { class: 'panel', 'aria-labelledby': 'events-title' },
      el('h2', { class: 'panel-title', id: 'events-title' }, 'Events'),
      eventsHost,
      pager)));
  loadHead(context, headHost);
  loadCredentialNames().then(() => loadEventsPage(context, eventsHost, pager, ledger.current));
}

async function loadHead(context, host) {
  let head;
  try {
    head = await callApi('events/head', {});
  } catch (error) {
    if (context.isCurrent()) host.replaceChildren(errorPanel(`The head could not be loaded: ${error.message}`, () => loadHead(context, host)));
    return;
  }
  if (!context.isCurrent()) return;
  const link = `${head.position}:${head.hash}`;
  host.replaceChildren(
    el('dl', { class: 'facts' },
      fact('Position', el('span', { class: 'mono', id: 'head-position' }, String(head.position))),
      fact('Hash', el('span', { class: 'mono break', id: 'head-hash' }, head.hash)),
      fact('Recorded', timeElement(head.recorded_at))),
    el('div', { class: 'secret-row' },
      el('code', { class: 'code-line', id: 'head-link' }, link),
      copyButton(() => link, { label: 'Copy head', id: 'copy-head' }),
      button('Refresh', { class: 'button ghost', onclick: () => loadHead(context, host) })),
    el('div', { class: 'explain' },
      el('p', {}, el('strong', {}, 'Record it. '), 'Keep this value where the server’s operator cannot change it: a ticket, a signed mail, your own notes. It commits to every event up to this position.'),
      el('p', {}, el('strong', {}, 'Verify it later. '), 'Against the database:'),
      el('pre', { class: 'code' }, `credential-ledger verify --expect-head ${link}`),
      el('p', {}, 'Or offline, against an export of the ledger:'),
      el('pre', { class: 'code' }, `credential-ledger verify --file ledger.jsonl --expect-head ${link}`),
      el('p', { class: 'muted' }, 'It recomputes the whole chain and checks that it still holds this link: an event changed, removed or cut off since makes it fail and name the position.')));
}

async function loadEventsPage(context, host, pager, pageIndex) {
  const load = ++ledger.load;
  const isLatest = () => load === ledger.load && context.isCurrent();
  host.setAttribute('aria-busy', 'true');
  let page;
  try {
    page = await callApi('events/list', { after_position: ledger.pages[pageIndex], limit: LEDGER_PAGE_SIZE });
  } catch (error) {
    if (!isLatest()) return;
    host.removeAttribute('aria-busy');
    host.replaceChildren(errorPanel(`The events could not be loaded: ${error.message}`, () => loadEventsPage(context, host, pager, pageIndex)));
    return;
  }
  // A later click's answer, or another view, wins: this one is dropped.
  if (!isLatest()) return;
  host.removeAttribute('aria-busy');
  ledger.current = pageIndex;
  ledger.pages.length = pageIndex + 1;
  if (page.has_more) ledger.pages.push(page.next_after_position);
  host.replaceChildren(page.events.length ? eventsTable(page.events, ledger.pages[pageIndex]) : emptyState('No events after this position.'));
  const go = (index) => loadEventsPage(context, host, pager, index);
  pager.replaceChildren(
    button('First', { class: 'button secondary small', disabled: pageIndex === 0, onclick: () => go(0) }),
    button('Previous', { class: 'button secondary small', disabled: pageIndex === 0, onclick: () => go(pageIndex - 1), id: 'events-previous' }),
    el('span', { class: 'pager-state' }, `Page ${pageIndex + 1}`),
    button('Next', { class: 'button secondary small', disabled: !page.has_more, onclick: () => go(pageIndex + 1), id: 'events-next' }),
  );
}

function eventsTable(events, afterPosition) {
  return el('div', { class: 'table-scroll', tabindex: '0', role: 'region', 'aria-label': 'Events table' },
    el('table', { class: 'table events-table', id: 'events-table' },
      el('caption', { class: 'visually-hidden' }, `Events after position ${afterPosition}`),
      el('thead', {}, el('tr', {}, ['Position', 'Recorded', 'Event', 'Credential', 'By', 'From', 'Request id', 'Hash'].map((label) => el('th', { scope: 'col' }, label)))),
      el('tbody', {}, events.map((event) => el('tr', { 'data-position': event.position },
        el('th', { scope: 'row', 'data-label': 'Position', class: 'mono' }, String(event.position)),
        el('td', { 'data-label': 'Recorded' }, timeElement(event.recorded_at)),
        el('td', { 'data-label': 'Event' }, eventTitle(event)),
        el('td', { 'data-label': 'Credential' }, historyLink(event.stream_id)),
        el('td', { 'data-label': 'By' }, actorElement(event.actor)),
        el('td', { 'data-label': 'From', class: 'mono' }, event.source_ip || muted('—')),
        el('td', { 'data-label': 'Request id', class: 'mono break' }, event.request_id || muted('—')),
        el('td', { 'data-label': 'Hash', class: 'mono', title: event.hash }, shortHash(event.hash)))))));
}

// ---------------------------------------------------------------------------------------------
// API reference view (built from the served OpenAPI document)

const OPENAPI_PATH = '/api/v1/openapi.json';
const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'];
let openApiDocument = null;

async function loadOpenApi() {
  if (!openApiDocument) {
    const response = await fetch(OPENAPI_PATH, { cache: 'no-store', credentials: 'omit' });
    if (!response.ok) throw new Error(`${OPENAPI_PATH} answered ${response.status}`);
    openApiDocument = await response.json();
  }
  return openApiDocument;
}

async function renderReferenceView(context) {
  const body = el('div', { class: 'reference' }, muted('Loading the OpenAPI document…'));
  context.root.append(el('section', { class: 'view' },
    viewHeader('API reference', {
      subtitle: el('span', {}, 'Built from the service’s OpenAPI document. ',
        el('a', { href: OPENAPI_PATH, id: 'raw-openapi', target: '_blank', rel: 'noopener' }, 'Raw document (JSON)')),
    }),
    body));
  let spec;
  try {
    spec = await loadOpenApi();
  } catch (error) {
    if (context.isCurrent()) body.replaceChildren(errorPanel(`The document could not be loaded: ${error.message}`, () => route()));
    return;
  }
  if (!context.isCurrent()) return;
  const operations = listOperations(spec);
  body.replaceChildren(
    referenceIntro(spec),
    referenceIndex(operations),
    ...tagSections(spec, operations),
    webhookSection(spec));
}

function listOperations(spec) {
  const operations = [];
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const method of HTTP_METHODS) {
      if (item[method]) operations.push({ path, method, operation: item[method], id: operationAnchor(item[method], method, path) });
    }
  }
  return operations;
}

function operationAnchor(operation, method, path) {
  return `op-${operation.operationId || `${method}-${path}`.replace(/[^A-Za-z0-9]+/g, '-')}`;
}

function referenceIntro(spec) {
  const info = spec.info || {};
  return el('div', { class: 'panel reference-intro' },
    el('h2', { class: 'panel-title' }, `${info.title || 'API'} ${info.version ? `v${info.version}` : ''}`),
    info.description ? el('div', { class: 'markdown' }, renderMarkdown(info.description)) : null,
    el('p', { class: 'muted' }, 'Every call is authenticated with the ', el('code', {}, 'X-Server-API-Key'), ' header. “Send” uses the key you signed in with; “Copy as curl” writes ', el('code', {}, '$KEY'), ' in its place.'));
}

function referenceIndex(operations) {
  return el('nav', { class: 'panel reference-index', 'aria-label': 'Operations' },
    el('h2', { class: 'panel-title' }, 'Operations'),
    el('ul', { class: 'index-list' }, operations.map(({ method, path, operation, id }) => el('li', {},
      button([methodBadge(method), el('span', { class: 'mono' }, path)], {
        class: 'index-button',
        onclick: () => openOperation(id),
        title: operation.summary || null,
      })))));
}

function openOperation(id) {
  const details = document.getElementById(id);
  if (!details) return;
  details.open = true;
  details.scrollIntoView({ block: 'start' });
  details.querySelector('summary').focus({ preventScroll: true });
}

function methodBadge(method) {
  return el('span', { class: `method method-${method}` }, method.toUpperCase());
}

function tagSections(spec, operations) {
  const tags = (spec.tags || []).map((tag) => tag.name);
  for (const { operation } of operations) {
    for (const tag of operation.tags || ['other']) if (!tags.includes(tag)) tags.push(tag);
  }
  return tags.map((tag) => {
    const mine = operations.filter(({ operation }) => (operation.tags || ['other']).includes(tag));
    if (!mine.length) return null;
    const described = (spec.tags || []).find((item) => item.name === tag);
    return el('section', { class: 'tag-section', 'aria-labelledby': `tag-${tag}` },
      el('h2', { class: 'tag-title', id: `tag-${tag}` }, capitalise(tag)),
      described && described.description ? el('div', { class: 'markdown muted' }, renderMarkdown(described.description)) : null,
      mine.map((entry) => operationDetails(spec, entry, { tryIt: true })));
  });
}

function webhookSection(spec) {
  const entries = [];
  for (const [name, item] of Object.entries(spec.webhooks || {})) {
    for (const method of HTTP_METHODS) {
      if (item[method]) entries.push({ path: name, method, operation: item[method], id: `webhook-${name}` });
    }
  }
  if (!entries.length) return null;
  return el('section', { class: 'tag-section', 'aria-labelledby': 'tag-sent-webhooks' },
    el('h2', { class: 'tag-title', id: 'tag-sent-webhooks' }, 'Webhooks the service sends'),
    entries.map((entry) => operationDetails(spec, entry, { tryIt: false })));
}

function operationDetails(spec, { path, method, operation, id }, { tryIt }) {
  const details = el('details', { class: 'operation', id, 'data-path': path });
  let built = false;
  // Built on first opening: the whole document at once is a lot of nodes for a narrow phone.
  details.addEventListener('toggle', () => {
    if (!details.open || built) return;
    built = true;
    details.append(operationBody(spec, { path, method, operation }, { tryIt }));
  });
  details.append(el('summary', { class: 'operation-summary' },
    methodBadge(method),
    el('span', { class: 'mono operation-path' }, path),
    el('span', { class: 'operation-title' }, operation.summary ? renderInlineMarkdown(operation.summary) : '')));
  return details;
}

function operationBody(spec, { path, method, operation }, { tryIt }) {
  const requestSchema = jsonSchemaOf(operation.requestBody);
  const parameters = operation.parameters || [];
  return el('div', { class: 'operation-body' },
    operation.description ? el('div', { class: 'markdown' }, renderMarkdown(operation.description)) : null,
    operation.security && operation.security.length ? el('p', { class: 'muted small' }, 'Needs the ', el('code', {}, 'X-Server-API-Key'), ' header.') : null,
    parameters.length ? el('section', { class: 'operation-part' }, el('h3', {}, 'Headers and parameters'), parametersList(spec, parameters)) : null,
    el('section', { class: 'operation-part request-schema' },
      el('h3', {}, 'Request body'),
      requestSchema ? schemaView(spec, requestSchema) : muted('None.'),
      operation.requestBody && !operation.requestBody.required && requestSchema ? el('p', { class: 'muted small' }, 'The body may be omitted.') : null),
    el('section', { class: 'operation-part responses' },
      el('h3', {}, 'Responses'),
      el('ul', { class: 'response-list' }, sortedResponses(operation.responses).map(([status, response]) => responseItem(spec, status, response)))),
    tryIt ? tryItPanel(spec, { path, method, operation, requestSchema }) : null);
}

function jsonSchemaOf(holder) {
  const content = holder && holder.content;
  if (!content) return null;
  const media = content['application/json'] || Object.values(content)[0];
  return media && media.schema ? media.schema : null;
}

function parametersList(spec, parameters) {
  return el('ul', { class: 'schema-properties' }, parameters.map((parameterOrRef) => {
    const parameter = resolveRef(spec, parameterOrRef);
    return el('li', { class: 'schema-property' },
      el('div', { class: 'property-line' },
        el('code', { class: 'property-name' }, parameter.name),
        el('span', { class: 'property-type' }, `${parameter.in} · ${typeLabel(spec, parameter.schema)}`),
        parameter.required ? el('span', { class: 'required' }, 'required') : null),
      parameter.description ? el('div', { class: 'markdown property-description' }, renderMarkdown(parameter.description)) : null);
  }));
}

/** By status, `2XX` among the 200s and `default` last (object order puts "410" before "2XX"). */
function sortedResponses(responses = {}) {
  const rank = (status) => (status === 'default' ? 1000 : Number(status.replace(/X/gi, '0')));
  return Object.entries(responses).sort(([a], [b]) => rank(a) - rank(b));
}

function responseItem(spec, status, responseOrRef) {
  const response = resolveRef(spec, responseOrRef);
  const schema = jsonSchemaOf(response);
  const success = /^2/.test(status);
  return el('li', { class: 'response', 'data-status': status },
    el('div', { class: 'response-line' },
      el('span', { class: `status-code ${success ? 'status-success' : 'status-error'}` }, status),
      el('div', { class: 'markdown response-description' }, renderMarkdown(response.description || ''))),
    schema ? el('details', { class: 'response-schema', open: success },
      el('summary', {}, 'Body: ', el('code', {}, typeLabel(spec, schema))),
      schemaView(spec, schema)) : null);
}

// -- Schemas

/** Follows a local `$ref` ("#/components/schemas/Name"); anything else is returned as is. */
function resolveRef(spec, node) {
  let current = node;
  for (let hops = 0; current && current.$ref && hops < 32; hops += 1) {
    if (!current.$ref.startsWith('#/')) return current;
    const target = current.$ref.slice(2).split('/')
      .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
      .reduce((value, part) => (value === undefined || value === null ? value : value[part]), spec);
    if (!target) return current;
    // Sibling keywords of a $ref (a description, say) win over the target's.
    const { $ref, ...siblings } = current;
    current = { ...target, ...siblings };
  }
  return current;
}

function refName(ref) {
  return ref.split('/').pop();
}

function typeLabel(spec, schema) {
  if (!schema) return 'any';
  if (schema.$ref) return refName(schema.$ref);
  if (schema.oneOf || schema.anyOf) {
    // "CredentialType | null" reads better than the document's order.
    const labels = (schema.oneOf || schema.anyOf).map((member) => typeLabel(spec, member));
    return [...labels.filter((label) => label !== 'null'), ...labels.filter((label) => label === 'null')].join(' | ');
  }
  if (schema.allOf) return schema.allOf.length === 1 ? typeLabel(spec, schema.allOf[0]) : 'object';
  const types = Array.isArray(schema.type) ? [...schema.type].sort((a, b) => (a === 'null') - (b === 'null')) : schema.type ? [schema.type] : [];
  if (!types.length) return schema.properties ? 'object' : 'any';
  return types.map((type) => {
    if (type === 'array') return `array of ${typeLabel(spec, schema.items)}`;
    return schema.format && type !== 'null' ? `${type} (${schema.format})` : type;
  }).join(' | ');
}

/** The object a schema describes, once `$ref`, `allOf` and a nullable `oneOf` are seen through;
 *  null when it is not an object with properties. */
function objectShape(spec, schemaOrRef) {
  const schema = resolveRef(spec, schemaOrRef);
  if (!schema) return null;
  if (schema.allOf) {
    const parts = schema.allOf.map((part) => objectShape(spec, part)).filter(Boolean);
    if (!parts.length) return null;
    return {
      properties: Object.assign({}, ...parts.map((part) => part.properties)),
      required: parts.flatMap((part) => part.required),
      closed: parts.every((part) => part.closed),
    };
  }
  const members = schema.oneOf || schema.anyOf;
  if (members) {
    const nonNull = members.filter((member) => resolveRef(spec, member).type !== 'null');
    return nonNull.length === 1 ? objectShape(spec, nonNull[0]) : null;
  }
  if (!schema.properties) return null;
  return { properties: schema.properties, required: schema.required || [], closed: schema.additionalProperties === false };
}

/** What a property holds, for nesting: its object shape, or that of its array's items. */
function nestedShape(spec, schemaOrRef) {
  const schema = resolveRef(spec, schemaOrRef);
  if (!schema) return null;
  const types = Array.isArray(schema.type) ? schema.type : [schema.type];
  if (types.includes('array') && schema.items) return objectShape(spec, schema.items);
  return objectShape(spec, schema);
}

const MAX_SCHEMA_DEPTH = 6;

function schemaView(spec, schemaOrRef) {
  const schema = resolveRef(spec, schemaOrRef);
  const shape = nestedShape(spec, schemaOrRef);
  return el('div', { class: 'schema' },
    el('p', { class: 'schema-type' }, el('code', {}, typeLabel(spec, schemaOrRef))),
    schema && schema.description ? el('div', { class: 'markdown property-description' }, renderMarkdown(schema.description)) : null,
    shape ? propertiesList(spec, shape, 1, refsOf(schemaOrRef)) : constraintsLine(schema));
}

function refsOf(schema) {
  return new Set(schema && schema.$ref ? [schema.$ref] : []);
}

function propertiesList(spec, shape, depth, seenRefs) {
  const entries = Object.entries(shape.properties);
  if (!entries.length) return el('p', { class: 'muted small' }, shape.closed ? 'An empty object: no field is accepted.' : 'An object.');
  return el('ul', { class: 'schema-properties' },
    entries.map(([name, property]) => propertyItem(spec, name, property, shape.required.includes(name), depth, seenRefs)),
    shape.closed ? el('li', { class: 'muted small closed-note' }, 'No other field is accepted.') : null);
}

function propertyItem(spec, name, propertyOrRef, required, depth, seenRefs) {
  const property = resolveRef(spec, propertyOrRef);
  const nested = depth < MAX_SCHEMA_DEPTH ? nestedShape(spec, propertyOrRef) : null;
  const refs = referencedNames(propertyOrRef);
  const cycle = refs.some((ref) => seenRefs.has(ref));
  const description = property.description || nonNullMemberDescription(spec, property);
  return el('li', { class: 'schema-property' },
    el('div', { class: 'property-line' },
      el('code', { class: 'property-name' }, name),
      el('span', { class: 'property-type' }, typeLabel(spec, propertyOrRef)),
      required ? el('span', { class: 'required' }, 'required') : el('span', { class: 'optional' }, 'optional')),
    description ? el('div', { class: 'markdown property-description' }, renderMarkdown(description)) : null,
    constraintsLine(scalarSchema(spec, property)),
    nested && !cycle ? propertiesList(spec, nested, depth + 1, new Set([...seenRefs, ...refs])) : null);
}

/** A nullable reference (`oneOf: [null, {$ref}]`) as the schema it refers to, for its
 *  constraints (an enum, say), with the property's own keywords on top. */
function scalarSchema(spec, property) {
  const members = property.oneOf || property.anyOf;
  if (!members) return property;
  const nonNull = members.filter((member) => resolveRef(spec, member).type !== 'null');
  return nonNull.length === 1 ? { ...resolveRef(spec, nonNull[0]), ...property } : property;
}

/** `oneOf: [null, {$ref, description}]` keeps its description on the member. */
function nonNullMemberDescription(spec, property) {
  const members = property.oneOf || property.anyOf || [];
  const described = members.find((member) => member.description);
  return described ? described.description : null;
}

function referencedNames(schema) {
  const refs = [];
  const visit = (node) => {
    if (!node || typeof node !== 'object') return;
    if (node.$ref) refs.push(node.$ref);
    for (const key of ['items', 'oneOf', 'anyOf', 'allOf']) {
      const value = node[key];
      if (Array.isArray(value)) value.forEach(visit);
      else visit(value);
    }
  };
  visit(schema);
  return refs;
}

function constraintsLine(schema) {
  if (!schema) return null;
  const parts = [];
  const enumerated = schema.enum || (schema.items && schema.items.enum);
  if (enumerated) parts.push(['one of', enumerated.map((value) => JSON.stringify(value)).join(', ')]);
  for (const [keyword, label] of [['minimum', 'minimum'], ['maximum', 'maximum'], ['minLength', 'min length'], ['maxLength', 'max length'], ['minItems', 'min items'], ['maxItems', 'max items']]) {
    if (schema[keyword] !== undefined) parts.push([label, String(schema[keyword])]);
  }
  if (schema.default !== undefined) parts.push(['default', JSON.stringify(schema.default)]);
  if (schema.example !== undefined) parts.push(['example', JSON.stringify(schema.example)]);
  if (schema.pattern) parts.push(['pattern', schema.pattern]);
  if (!parts.length) return null;
  return el('p', { class: 'constraints' }, parts.map(([label, value]) =>
    el('span', { class: 'constraint' }, `${label} `, el('code', { class: 'break' }, value))));
}

// -- Try it

/** The smallest valid-looking body: the required fields, with the document's examples. */
function exampleBody(spec, schema) {
  const shape = schema ? objectShape(spec, schema) : null;
  if (!shape) return {};
  const body = {};
  for (const name of shape.required) body[name] = exampleValue(spec, shape.properties[name]);
  return body;
}

function exampleValue(spec, propertyOrRef) {
  const property = resolveRef(spec, propertyOrRef) || {};
  if (property.example !== undefined) return property.example;
  if (property.default !== undefined) return property.default;
  if (property.enum) return property.enum[0];
  const types = Array.isArray(property.type) ? property.type : [property.type];
  if (types.includes('integer') || types.includes('number')) return 0;
  if (types.includes('boolean')) return false;
  if (types.includes('array')) return [];
  if (types.includes('object')) return exampleBody(spec, property);
  return '';
}

function tryItPanel(spec, { path, method, operation, requestSchema }) {
  const sendsBody = method !== 'get' && method !== 'head';
  const needsKey = Boolean((operation.security || spec.security || []).length);
  const bodyField = sendsBody ? formField({
    label: 'Request body (JSON)',
    control: el('textarea', { class: 'input mono body-input', rows: '6', spellcheck: 'false' }),
    id: uniqueId('try-body'),
  }) : null;
  if (bodyField) bodyField.control.value = JSON.stringify(exampleBody(spec, requestSchema), null, 2);
  const curl = el('pre', { class: 'code curl-command' });
  const updateCurl = () => { curl.textContent = curlCommand(method, path, bodyField ? bodyField.control.value : null, needsKey); };
  if (bodyField) bodyField.control.addEventListener('input', updateCurl);
  updateCurl();
  const status = el('p', { class: 'try-status', 'aria-live': 'polite' });
  const output = el('pre', { class: 'code try-output', hidden: true, tabindex: '0', 'aria-label': 'Response body' });
  const send = button('Send', { class: 'button primary try-send' });
  const panel = el('section', { class: 'operation-part try-it' },
    el('h3', {}, 'Try it'),
    bodyField ? bodyField.wrapper : el('p', { class: 'muted small' }, 'No body.'),
    el('div', { class: 'try-actions' }, send, copyButton(() => curl.textContent, { label: 'Copy as curl' })),
    el('p', { class: 'field-label' }, 'As curl'),
    curl, status, output);
  if (needsKey && !session.key) {
    // Read before signing in (at /docs): the request can be built and copied, not sent.
    send.disabled = true;
    status.append(el('a', { href: '#/credentials' }, 'Sign in'), ' to send it with your key.');
  }
  send.addEventListener('click', async () => {
    if (bodyField) bodyField.clearError();
    let body;
    if (bodyField) {
      try {
        body = JSON.stringify(JSON.parse(bodyField.control.value || '{}'));
      } catch (error) {
        bodyField.showError(`Not JSON: ${error.message}`);
        return;
      }
    }
    setBusy(send, true, 'Sending…');
    const result = await sendTry(method, path, body, needsKey);
    setBusy(send, false);
    panel.dataset.lastStatus = String(result.status);
    status.replaceChildren(
      el('span', { class: `status-code ${result.status >= 200 && result.status < 300 ? 'status-success' : 'status-error'}` }, result.status ? String(result.status) : 'no answer'),
      ` ${result.statusText} · ${formatNumber(result.milliseconds)} ms`);
    output.textContent = result.body;
    output.hidden = false;
  });
  return panel;
}

/** Sends the request to this origin only, whatever the document's paths say: the key must
 *  never leave it. */
async function sendTry(method, path, body, needsKey) {
  const url = new URL(path, location.origin);
  if (url.origin !== location.origin) return { status: 0, statusText: 'refused: not this origin', milliseconds: 0, body: '' };
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (needsKey) headers['X-Server-API-Key'] = session.key;
  const started = performance.now();
  try {
    const response = await fetch(url, { method: method.toUpperCase(), headers, body, cache: 'no-store', credentials: 'omit' });
    const text = await response.text();
    return { status: response.status, statusText: response.statusText, milliseconds: Math.round(performance.now() - started), body: prettyJson(text) };
  } catch (error) {
    return { status: 0, statusText: error.message, milliseconds: Math.round(performance.now() - started), body: '' };
  }
}

function prettyJson(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

/** The same request for a terminal, with `$KEY` where the key goes: a copied command line must
 *  not carry the key into a shell history or a chat. */
function curlCommand(method, path, bodyText, needsKey) {
  const lines = [`curl -s${method === 'get' || method === 'post' ? '' : ` -X ${method.toUpperCase()}`} ${shellQuote(location.origin + path)}`];
  if (needsKey) lines.push('-H "X-Server-API-Key: $KEY"');
  if (bodyText !== null) {
    let compact = bodyText;
    try {
      compact = JSON.stringify(JSON.parse(bodyText || '{}'));
    } catch {
      // Shown as typed: the person is still editing it.
    }
    lines.push("-H 'Content-Type: application/json'", `-d ${shellQuote(compact)}`);
  }
  return lines.join(' \\\n     ');
}

function shellQuote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

// -- Markdown (a small, safe subset: paragraphs, lists, fenced code, `code`, **bold**, *emphasis*,
// [links](https://…)); it builds nodes, never HTML.

function renderMarkdown(source) {
  const fragment = document.createDocumentFragment();
  for (const block of markdownBlocks(source)) fragment.append(block);
  return fragment;
}

function markdownBlocks(source) {
  const lines = source.replace(/\r\n?/g, '\n').split('\n');
  const blocks = [];
  let index = 0;
  while (index < lines.length) {
    const line = lines[index];
    if (!line.trim()) { index += 1; continue; }
    if (/^```/.test(line.trim())) {
      const code = [];
      index += 1;
      while (index < lines.length && !/^```/.test(lines[index].trim())) code.push(lines[index++]);
      index += 1;
      blocks.push(el('pre', { class: 'code' }, code.join('\n')));
      continue;
    }
    const listKind = listMarker(line);
    if (listKind) {
      const items = [];
      while (index < lines.length && lines[index].trim()) {
        if (listMarker(lines[index]) === listKind) items.push(lines[index].replace(/^\s*(?:[-*+]|\d+[.)])\s+/, ''));
        else items[items.length - 1] += ` ${lines[index].trim()}`;
        index += 1;
      }
      blocks.push(el(listKind, {}, items.map((item) => el('li', {}, renderInlineMarkdown(item)))));
      continue;
    }
    const paragraph = [];
    while (index < lines.length && lines[index].trim() && !listMarker(lines[index]) && !/^```/.test(lines[index].trim())) paragraph.push(lines[index++].trim());
    const heading = /^#{1,6}\s+(.*)$/.exec(paragraph[0]);
    if (heading && paragraph.length === 1) blocks.push(el('p', { class: 'markdown-heading' }, el('strong', {}, renderInlineMarkdown(heading[1]))));
    else blocks.push(el('p', {}, renderInlineMarkdown(paragraph.join(' '))));
  }
  return blocks;
}

function listMarker(line) {
  if (/^\s*[-*+]\s+/.test(line)) return 'ul';
  if (/^\s*\d+[.)]\s+/.test(line)) return 'ol';
  return null;
}

const INLINE_PATTERN = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([\s\S]+?)\*\*|\*([^*\s](?:[^*]*[^*\s])?)\*|\[([^\]]+)\]\(([^)\s]+)\)/g;

/** Inline Markdown as a fragment of text nodes and elements. */
function renderInlineMarkdown(text) {
  const fragment = document.createDocumentFragment();
  let last = 0;
  for (const match of text.matchAll(INLINE_PATTERN)) {
    if (match.index > last) fragment.append(text.slice(last, match.index));
    fragment.append(inlineNode(match));
    last = match.index + match[0].length;
  }
  if (last < text.length) fragment.append(text.slice(last));
  return fragment;
}

function inlineNode(match) {
  const [, , code, strong, emphasis, linkText, href] = match;
  if (code !== undefined) return el('code', {}, code.length > 2 && code.startsWith(' ') && code.endsWith(' ') ? code.slice(1, -1) : code);
  if (strong !== undefined) return el('strong', {}, renderInlineMarkdown(strong));
  if (emphasis !== undefined) return el('em', {}, renderInlineMarkdown(emphasis));
  // Only web links: a `javascript:` or `data:` URL is shown as text. Links to the README's own
  // sections (#…) have no target here, and would be taken for the console's views.
  if (/^https?:\/\//i.test(href)) return el('a', { href, rel: 'noopener noreferrer', target: '_blank' }, renderInlineMarkdown(linkText));
  return renderInlineMarkdown(linkText);
}

// ---------------------------------------------------------------------------------------------
// Start

function start() {
  document.getElementById('sign-out').addEventListener('click', () => signOut());
  // The skip link would otherwise replace the view's route in the address bar.
  document.getElementById('skip-link').addEventListener('click', (event) => {
    event.preventDefault();
    main.focus();
  });
  window.addEventListener('hashchange', route);
  // /docs is this page opened at its API reference.
  if (location.pathname === '/docs' && (!location.hash || location.hash === '#')) history.replaceState(null, '', '#/reference');
  route();
}

start();
