// The viewer's own page: settings (personalization, muted words, daily limit, hidden creators
// and sounds), download / refresh / erase my data, and how the feed is made.

import { get, put, post, del, userPath } from './api.js';
import { session } from './session.js';
import { h, append, clear, toast, confirmDialog, humanize } from './dom.js';
import { barChart } from './charts.js';

export class MePage {
  constructor(root, app) {
    this.root = root;
    this.app = app;
    this.settings = null;
    this.build();
  }

  build() {
    this.whoEl = h('p', { class: 'who' });
    this.statusEl = h('span', { id: 'settings-status', class: 'status', 'aria-live': 'polite' });
    this.personalization = h('input', { type: 'checkbox', id: 'personalization', role: 'switch',
      onchange: () => this.save({ personalization: this.personalization.checked }) });
    this.muteInput = h('input', { id: 'mute-input', type: 'text', maxlength: '64', placeholder: 'a word or #hashtag',
      'aria-label': 'Word to mute' });
    this.mutedList = h('div', { id: 'muted-list', class: 'chips' });
    this.limitInput = h('input', { id: 'daily-limit', type: 'number', min: '1', max: '1440', placeholder: 'none',
      'aria-label': 'Daily limit in minutes' });
    this.hiddenList = h('div', { id: 'hidden-list', class: 'chips' });
    this.young = h('input', { type: 'checkbox', id: 'young-viewer', role: 'switch',
      onchange: () => this.save({ young_viewer: this.young.checked }) });
    this.youngRow = h('label', { class: 'switch-row', hidden: true }, this.young,
      h('span', {}, h('b', { text: 'Young viewer protections' }),
        h('small', { text: 'A daily limit by default, and sensitive topics shown less.' })));
    this.summaryEl = h('div', { id: 'data-summary' });
    this.dataStatus = h('p', { id: 'data-status', class: 'status', 'aria-live': 'polite' });
    this.transparencyEl = h('div', { class: 'transparency-body' });

    this.root.append(
      h('section', { class: 'panel' },
        h('h2', { text: 'Me' }), this.whoEl,
        h('button', { type: 'button', class: 'btn', id: 'switch-viewer', onclick: () => this.app.signOut() }, 'Switch viewer')),
      h('section', { class: 'panel', id: 'settings' },
        h('h2', {}, 'Settings ', this.statusEl),
        h('label', { class: 'switch-row' }, this.personalization,
          h('span', {}, h('b', { text: 'Personalized feed' }),
            h('small', { text: 'Off: a feed of what is popular and new, not based on what you do.' }))),
        h('h3', { text: 'Muted words' }),
        h('form', { id: 'mute-form', class: 'inline-form', onsubmit: (e) => { e.preventDefault(); this.mute(); } },
          this.muteInput, h('button', { type: 'submit', class: 'btn btn-primary', id: 'mute-add' }, 'Mute')),
        this.mutedList,
        h('h3', { text: 'Daily limit' }),
        h('form', { class: 'inline-form', onsubmit: (e) => { e.preventDefault(); this.saveLimit(); } },
          this.limitInput, h('span', { class: 'muted', text: 'minutes' }),
          h('button', { type: 'submit', class: 'btn', id: 'daily-limit-save' }, 'Save'),
          h('button', { type: 'button', class: 'btn', id: 'daily-limit-clear',
            onclick: () => this.save({ daily_limit_minutes: null }) }, 'No limit')),
        h('h3', { text: 'Hidden creators and sounds' }), this.hiddenList,
        this.youngRow),
      h('section', { class: 'panel', id: 'my-data' },
        h('h2', { text: 'My data' }),
        h('div', { class: 'button-row' },
          h('button', { type: 'button', class: 'btn btn-primary', id: 'download-data', onclick: () => this.download() }, 'Download my data'),
          h('button', { type: 'button', class: 'btn', id: 'refresh-feed', onclick: () => this.refresh() }, 'Refresh my feed'),
          h('button', { type: 'button', class: 'btn btn-danger', id: 'erase-data', onclick: () => this.erase() }, 'Erase my data')),
        this.dataStatus, this.summaryEl),
      h('section', { class: 'panel' },
        h('details', { id: 'transparency' }, h('summary', { text: 'How your feed is made' }), this.transparencyEl)));
  }

  show() {
    append(clear(this.whoEl), ['Signed in as ', h('b', { id: 'me-user', text: session.userId }),
      session.demo ? h('span', { class: 'chip demo', text: 'demo sign-in' }) : null]);
    this.loadSettings();
    this.loadTransparency();
  }

  hide() {}

  async loadSettings() {
    try {
      this.render(await get(userPath('/settings')));
    } catch (err) {
      this.statusEl.textContent = `Could not load settings: ${err.explanation || err.message}`;
      if (err.status === 401) this.app.signedOut(err);
    }
  }

  render(settings) {
    this.settings = settings;
    this.personalization.checked = Boolean(settings.personalization);
    clear(this.mutedList);
    for (const word of settings.muted_keywords || []) {
      this.mutedList.append(h('span', { class: 'chip muted-word', dataset: { word } }, word,
        h('button', { type: 'button', class: 'chip-x', 'aria-label': `Unmute ${word}`,
          onclick: () => this.save({ muted_keywords: settings.muted_keywords.filter((w) => w !== word) }) }, '×')));
    }
    if (!(settings.muted_keywords || []).length) this.mutedList.append(h('span', { class: 'muted', text: 'No muted words.' }));
    this.limitInput.value = settings.daily_limit_minutes ?? '';
    clear(this.hiddenList);
    const hidden = [
      ...(settings.hidden_creators || []).map((id) => ['hidden_creators', id, `@${id}`]),
      ...(settings.hidden_sounds || []).map((id) => ['hidden_sounds', id, `sound ${id}`]),
    ];
    for (const [field, id, label] of hidden) {
      this.hiddenList.append(h('span', { class: 'chip', dataset: { hidden: id } }, label,
        h('button', { type: 'button', class: 'chip-x', 'aria-label': `Show ${label} again`,
          onclick: () => this.save({ [field]: settings[field].filter((x) => x !== id) }) }, '×')));
    }
    if (!hidden.length) this.hiddenList.append(h('span', { class: 'muted', text: 'Nothing hidden. Use “Not interested” on a video.' }));
    this.youngRow.hidden = !('young_viewer' in settings);
    this.young.checked = Boolean(settings.young_viewer);
  }

  async save(change) {
    this.statusEl.textContent = 'Saving…';
    try {
      this.render(await put(userPath('/settings'), change));
      this.statusEl.textContent = 'Saved';
      this.app.bus.dispatchEvent(new CustomEvent('settings-changed', { detail: change }));
    } catch (err) {
      this.statusEl.textContent = `Not saved: ${err.explanation || err.message}`;
      if (this.settings) this.render(this.settings);
    }
  }

  mute() {
    const word = this.muteInput.value.trim();
    if (!word) return;
    const current = (this.settings && this.settings.muted_keywords) || [];
    this.muteInput.value = '';
    this.save({ muted_keywords: [...current.filter((w) => w !== word), word] });
  }

  saveLimit() {
    const raw = this.limitInput.value.trim();
    const minutes = Number(raw);
    if (!raw) return this.save({ daily_limit_minutes: null });
    if (!Number.isInteger(minutes) || minutes < 1 || minutes > 1440) {
      this.statusEl.textContent = 'A daily limit is a whole number of minutes from 1 to 1440';
      return null;
    }
    return this.save({ daily_limit_minutes: minutes });
  }

  async download() {
    this.dataStatus.textContent = 'Gathering your data…';
    try {
      const data = await get(userPath('/data'));
      const blob = new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' });
      const url = URL.createObjectURL(blob);
      const link = h('a', { href: url, download: `reelrank-data-${session.userId}.json`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      const events = Array.isArray(data.events) ? data.events : [];
      this.dataStatus.textContent = `Downloaded: ${events.length} events and everything inferred from them.`;
      this.renderSummary(data, events);
    } catch (err) {
      this.dataStatus.textContent = `Could not export: ${err.explanation || err.message}`;
    }
  }

  renderSummary(data, events) {
    const byType = new Map();
    for (const e of events) byType.set(e.type, (byType.get(e.type) || 0) + 1);
    const interests = data.inferred_interests || {};
    const top = (list) => (Array.isArray(list) ? list : []).slice(0, 6)
      .map((x) => ({ label: x.id ?? x.name ?? String(x), value: Number(x.weight ?? x.value ?? 0) }));
    // The ranker's topic preference: long views per topic (the export lists views too).
    const topics = (Array.isArray(interests.topics) ? interests.topics : [])
      .filter((t) => Number(t.long_views) > 0).slice(0, 6)
      .map((t) => ({ label: String(t.id), value: Number(t.long_views) }));
    append(clear(this.summaryEl), [
      byType.size ? [h('h3', { text: 'Your events by type' }),
        barChart([...byType].sort((a, b) => b[1] - a[1]).map(([label, value]) => ({ label, value })))] : null,
      top(interests.hashtags).length ? [h('h3', { text: 'Hashtags ReelRank thinks you like' }),
        barChart(top(interests.hashtags).map((r) => ({ ...r, label: `#${r.label}` })))] : null,
      topics.length ? [h('h3', { text: 'Topics you watched to the end' }), barChart(topics)] : null,
      top(interests.creators).length ? [h('h3', { text: 'Creators' }),
        barChart(top(interests.creators).map((r) => ({ ...r, label: `@${r.label}` })))] : null,
      Array.isArray(data.access_log) ? h('p', { class: 'muted small',
        text: `Access log: ${data.access_log.length} reads or changes of your data by you or the service.` }) : null]);
  }

  async refresh() {
    const ok = await confirmDialog({ title: 'Refresh your feed?', confirm: 'Refresh',
      text: 'ReelRank forgets the interests it inferred from what you watched. Your account, settings and follows stay.' });
    if (!ok) return;
    try {
      await post(userPath('/reset'), {});
      this.dataStatus.textContent = 'Your feed starts fresh: the interests inferred so far are forgotten.';
      this.app.bus.dispatchEvent(new CustomEvent('feed-reset'));
    } catch (err) {
      this.dataStatus.textContent = `Could not refresh: ${err.explanation || err.message}`;
    }
  }

  async erase() {
    const ok = await confirmDialog({ title: 'Erase your data?', confirm: 'Erase everything', danger: true,
      text: `Everything ReelRank stores about ${session.userId} is deleted: events, settings, interests. This cannot be undone.` });
    if (!ok) return;
    try {
      await this.app.settleFeed();
      await del(userPath(''));
    } catch (err) {
      this.dataStatus.textContent = `Could not erase: ${err.explanation || err.message}`;
      return;
    }
    clear(this.summaryEl);
    // Erasure revokes the viewer's tokens; a demo session signs the same id in again. That
    // comes first: a feed asked for in between would go out with a revoked token.
    try {
      await this.app.renewAfterErase();
    } catch (err) {
      this.app.signedOut(err);
    }
    this.dataStatus.textContent = `Erased. Nothing about ${session.userId} is stored any more; the next feed starts from scratch.`;
    this.app.bus.dispatchEvent(new CustomEvent('data-erased'));
    this.loadSettings();
  }

  async loadTransparency() {
    if (this.transparencyLoaded) return;
    try {
      const t = await get('/v1/transparency', { as: null });
      this.transparencyLoaded = true;
      append(clear(this.transparencyEl), [
        t.summary ? h('p', { text: t.summary }) : null,
        Array.isArray(t.signals) ? h('ul', {}, t.signals.map((s) => h('li', {}, h('b', { text: s.signal }), ` — ${s.how}`))) : null,
        Array.isArray(t.your_options) ? [h('h3', { text: 'Your options' }),
          h('ul', {}, t.your_options.map((o) => h('li', {}, h('b', { text: humanize(o.option) }), ` — ${o.how}`)))] : null]);
    } catch (err) {
      clear(this.transparencyEl).append(h('p', { class: 'muted', text: `Not available: ${err.message}` }));
    }
  }
}
