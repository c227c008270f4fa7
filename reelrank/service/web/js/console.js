// The operator console: GET /v1/stats polled into live charts (events/s, feed latency,
// engagement, creator exposure Gini, topic diversity), model version and age, and a button
// that starts a training run and follows its job.
//
// Engagement comes from stats.engagement, which covers the window the server names (every
// event in the log, including those stored before this server started); the page prints that
// window next to the figures, so a rate is never read without knowing what it is a rate of.

import { get, post } from './api.js';
import { h, clear, toast, formatNumber, formatDuration } from './dom.js';
import { LineChart } from './charts.js';

const POLL_MS = 2000;
const KEEP_POINTS = 90;

const num = (v) => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const pct = (v) => (num(v) === null ? '–' : `${(v * 100).toFixed(1)}%`);

export class ConsolePage {
  constructor(root, app) {
    this.root = root;
    this.app = app;
    this.series = {};
    this.timer = null;
    this.tiles = h('div', { class: 'tiles', id: 'console-tiles' });
    this.charts = {
      events: new LineChart({ title: 'Events per second' }),
      latency: new LineChart({ title: 'Feed latency (ms)', unit: ' ms' }),
      engagement: new LineChart({ title: 'Engagement', format: pct }),
      fairness: new LineChart({ title: 'Creator exposure Gini and topic diversity (bits)' }),
    };
    this.trainButton = h('button', { type: 'button', class: 'btn btn-primary', id: 'train-start', onclick: () => this.train() }, 'Train now');
    this.progress = h('progress', { id: 'train-progress', max: '1', value: '0' });
    this.trainStatus = h('span', { id: 'train-status', class: 'status', 'aria-live': 'polite' });
    this.errorEl = h('p', { class: 'error', hidden: true });
    this.windowEl = h('p', { class: 'muted small', id: 'engagement-window' });
    root.append(
      h('section', { class: 'panel console-head' },
        h('h2', { text: 'Operator console' }),
        h('div', { class: 'train-row' }, this.trainButton, this.progress, this.trainStatus)),
      this.errorEl,
      this.tiles,
      this.windowEl,
      h('div', { class: 'chart-grid console-charts' }, Object.values(this.charts).map((c) => c.el)));
  }

  show() {
    this.poll();
    clearInterval(this.timer);
    this.timer = setInterval(() => this.poll(), POLL_MS);
  }

  hide() {
    clearInterval(this.timer);
    this.timer = null;
  }

  push(name, t, value) {
    if (num(value) === null) return;
    const points = this.series[name] || (this.series[name] = []);
    points.push([t, value]);
    if (points.length > KEEP_POINTS) points.shift();
  }

  line(name, label) {
    return { name: label, points: this.series[name] || [] };
  }

  async poll() {
    let stats;
    try {
      stats = await get('/v1/stats', { as: 'admin' });
      this.errorEl.hidden = true;
    } catch (err) {
      this.errorEl.hidden = false;
      this.errorEl.textContent = `Live figures unavailable: ${err.explanation || err.message}`;
      if (err.status === 401 || err.status === 403) this.hide();
      return;
    }
    const t = Date.now();
    const latency = stats.feed_latency_ms || {};
    const online = stats.online || {};
    const engagement = stats.engagement || {};
    const fair = stats.fairness || {};
    const model = stats.model || {};
    const diversity = num(fair.per_user_topic_entropy_bits) ?? num(online.per_user_topic_entropy_bits);
    this.push('events', t, num(stats.events_per_second));
    this.push('p50', t, num(latency.p50));
    this.push('p99', t, num(latency.p99));
    this.push('long_view', t, num(engagement.long_view_rate));
    this.push('like', t, num(engagement.like_rate));
    this.push('gini', t, num(fair.creator_exposure_gini));
    this.push('diversity', t, diversity);
    this.charts.events.draw([this.line('events', 'events/s')]);
    this.charts.latency.draw([this.line('p50', 'p50'), this.line('p99', 'p99')]);
    this.charts.engagement.draw([this.line('long_view', 'long views / view'), this.line('like', 'likes / impression')]);
    this.charts.fairness.draw([this.line('gini', 'Gini'), this.line('diversity', 'topic entropy')]);
    const catalog = stats.catalog || {};
    clear(this.tiles).append(
      tile('events/s', formatNumber(num(stats.events_per_second))),
      tile('feed p50 / p99', `${formatNumber(num(latency.p50))} / ${formatNumber(num(latency.p99))} ms`),
      tile('model', model.version || '–', 'model-version'),
      tile('model age', num(model.age_s) === null ? 'not trained' : formatDuration(model.age_s * 1000)),
      tile('catalog', `${formatNumber(num(catalog.items))} videos`),
      tile('live viewers', formatNumber(num(catalog.viewers_live))),
      tile('creator exposure Gini', formatNumber(num(fair.creator_exposure_gini), 3), 'gini'),
      tile('topic diversity', diversity === null ? '–' : `${diversity.toFixed(2)} bits`),
      tile('catalog coverage', pct(fair.catalog_coverage)),
      tile('long-view rate', pct(engagement.long_view_rate), 'long-view-rate'),
      tile('like rate', pct(engagement.like_rate), 'like-rate'),
      tile('share rate', pct(engagement.share_rate), 'share-rate'));
    this.windowEl.textContent = engagementWindow(engagement);
    this.charts.engagement.caption(`Engagement: ${engagement.window || 'no events yet'}`);
  }

  async train() {
    this.trainButton.disabled = true;
    this.trainStatus.textContent = 'Starting…';
    try {
      const { job_id: jobId } = await post('/v1/admin/train', {}, { as: 'admin' });
      this.follow(jobId);
    } catch (err) {
      this.trainStatus.textContent = `Could not start: ${err.explanation || err.message}`;
      this.trainButton.disabled = false;
    }
  }

  async follow(jobId) {
    let job;
    try {
      job = await get(`/v1/admin/jobs/${encodeURIComponent(jobId)}`, { as: 'admin' });
    } catch (err) {
      this.trainStatus.textContent = `Lost the job: ${err.message}`;
      this.trainButton.disabled = false;
      return;
    }
    this.progress.value = num(job.progress) ?? 0;
    this.progress.dataset.status = job.status;
    this.trainStatus.textContent = `${job.status} ${Math.round((num(job.progress) ?? 0) * 100)}%`;
    if (job.status === 'done') {
      this.trainStatus.textContent = `done: serving model ${job.model_version || ''}`;
      this.trainButton.disabled = false;
      toast(`New model ${job.model_version || ''} is serving`);
      this.poll();
    } else if (job.status === 'failed') {
      this.trainStatus.textContent = `failed: ${job.error || 'see the server log'}`;
      this.trainButton.disabled = false;
    } else {
      setTimeout(() => this.follow(jobId), 1000);
    }
  }
}

// "Engagement over all events in the log: 12,345 impressions, 13,002 views (long views and
// watch ratio per view; likes and shares per impression)."
function engagementWindow(e) {
  if (!e.window) return 'Engagement: no events yet.';
  return `Engagement over ${e.window}: ${formatNumber(num(e.impressions))} impressions, ` +
    `${formatNumber(num(e.views))} views (long views per view; likes and shares per impression).`;
}

function tile(label, value, id) {
  return h('div', { class: 'tile', dataset: id ? { tile: id } : {} },
    h('span', { class: 'tile-label', text: label }), h('b', { class: 'tile-value', text: value }));
}
